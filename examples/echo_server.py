"""A line-by-line echo server over utcp.

    python examples/echo_server.py 127.0.0.1:4000

Every line a client sends comes back to it.  Ctrl-C stops the server.  Port 0
picks a free port; the first line printed is ``echo server on HOST:PORT``.
The server itself is :mod:`utcp.apps.echo` (also ``python -m utcp
echo-server``): it runs :func:`utcp.serve` with :func:`handle` per connection.
"""

from __future__ import annotations

import sys

from utcp.apps.echo import SERVER, handle, serve

__all__ = ["handle", "main", "serve"]


def main(argv: list[str] | None = None) -> int:
    """Run the echo server; see ``--help``."""
    return SERVER.main(argv)


if __name__ == "__main__":
    sys.exit(main())
