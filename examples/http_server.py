"""An HTTP/1.1 server over utcp, with h11.

    python examples/http_server.py 127.0.0.1:8080 [--root DIR]

Serves the files under ``--root`` (a directory gives its index.html or a
listing) or, without it, a built-in page showing the connection's TCP
state.  Needs h11 (``pip install 'utcp[examples]'``).  The first line printed
is ``http server on HOST:PORT, ...``.  The logic is :mod:`utcp.apps.http`
(also ``python -m utcp http-server``).
"""

from __future__ import annotations

import sys

from utcp.apps.http import SERVER, handle_http, serve_http

__all__ = ["handle_http", "main", "serve_http"]


def main(argv: list[str] | None = None) -> int:
    """Run the HTTP server; see ``--help``."""
    return SERVER.main(argv)


if __name__ == "__main__":
    sys.exit(main())
