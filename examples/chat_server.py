"""A chat room over utcp: nicknames, broadcast, /who, /quit.

    python examples/chat_server.py 127.0.0.1:4000

The first line a client sends is its nickname (taken ones are refused);
members' lines are broadcast to the others, with join and leave notices.
Keepalive is on with short times (``--keepalive-time 10 --keepalive-intvl 2
--keepalive-probes 3``), so a client that vanishes is dropped and announced
as ``* nick left (timed out)``.  The first line printed is ``chat server on
HOST:PORT`` (port 0 picks a free port); Ctrl-C stops.  The logic is
:mod:`utcp.apps.chat` (also ``python -m utcp chat-server``).
"""

from __future__ import annotations

import sys

from utcp.apps.chat import SERVER, ChatServer, serve_chat

__all__ = ["ChatServer", "main", "serve_chat"]


def main(argv: list[str] | None = None) -> int:
    """Run the chat server; see ``--help``."""
    return SERVER.main(argv)


if __name__ == "__main__":
    sys.exit(main())
