"""An HTTP/1.1 client over utcp, with h11.

    python examples/http_client.py 127.0.0.1:8080 /index.html

Sends one request (``-X HEAD`` for a HEAD) and prints the status line, the
headers, a blank line and the body (``-o FILE`` saves the body instead).
Exits 0 when the status is below 400, else 1.  The logic is
:mod:`utcp.apps.http` (also ``python -m utcp http-get``).
"""

from __future__ import annotations

import sys

from utcp.apps.http import CLIENT, http_get

__all__ = ["http_get", "main"]


def main(argv: list[str] | None = None) -> int:
    """Fetch one URL path; see ``--help``."""
    return CLIENT.main(argv)


if __name__ == "__main__":
    sys.exit(main())
