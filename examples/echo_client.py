"""A line-by-line echo client over utcp.

    python examples/echo_client.py 127.0.0.1:4000

Each line typed (or piped) on standard input is sent; each echoed line is
printed.  At end of input the client half-closes, prints what is still on
its way back, and exits.  Ctrl-C exits at once.  The client itself is
:mod:`utcp.apps.echo` (also ``python -m utcp echo``).
"""

from __future__ import annotations

import sys

from utcp.apps.echo import CLIENT, client

__all__ = ["client", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the echo client; see ``--help``."""
    return CLIENT.main(argv)


if __name__ == "__main__":
    sys.exit(main())
