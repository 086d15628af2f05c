"""Receive files over utcp into a directory, checking each one's SHA-256.

    python examples/file_recv.py 127.0.0.1:4000 --out downloads/

Each file is written to a temporary name and kept only if its size and
SHA-256 match the sender's header (existing files are never overwritten:
``name.1``, ``name.2``...); the sender is told ``OK`` or ``FAIL``.
``--once`` exits after one file (status 0 if it was verified, else 1).  The
first line printed is ``file receiver on HOST:PORT, ...``.  The logic is
:mod:`utcp.apps.filexfer` (also ``python -m utcp recv``).
"""

from __future__ import annotations

import sys

from utcp.apps.filexfer import RECEIVER, receive_files

__all__ = ["main", "receive_files"]


def main(argv: list[str] | None = None) -> int:
    """Receive files; see ``--help``."""
    return RECEIVER.main(argv)


if __name__ == "__main__":
    sys.exit(main())
