"""A chat client over utcp.

    python examples/chat_client.py 127.0.0.1:4000 --nick alice

Lines typed are sent to the room, lines from the room are printed.  The
first line sent is the nickname: ``--nick`` or, without it, the first line
typed.  ``/who`` lists who is online, ``/quit`` (or end of input) leaves.
The logic is :mod:`utcp.apps.chat` (also ``python -m utcp chat``).
"""

from __future__ import annotations

import sys

from utcp.apps.chat import CLIENT, chat_client

__all__ = ["chat_client", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the chat client; see ``--help``."""
    return CLIENT.main(argv)


if __name__ == "__main__":
    sys.exit(main())
