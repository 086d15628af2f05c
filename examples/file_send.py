"""Send a file over utcp, with a progress bar and an end-to-end SHA-256 check.

    python examples/file_send.py 127.0.0.1:4000 photo.jpg

Sends a one-line JSON header (name, size, sha256) then the bytes, and waits
for the receiver's verdict: exits 0 on ``OK``, 1 on ``FAIL`` or a network
error.  ``--quiet`` hides the progress bar.  Try it through a lossy relay::

    python -m utcp chaos --listen 127.0.0.1:5000 --forward 127.0.0.1:4000 --loss 0.05
    python examples/file_send.py 127.0.0.1:5000 photo.jpg

The logic is :mod:`utcp.apps.filexfer` (also ``python -m utcp send``).
"""

from __future__ import annotations

import sys

from utcp.apps.filexfer import SENDER, send_file

__all__ = ["main", "send_file"]


def main(argv: list[str] | None = None) -> int:
    """Send one file; see ``--help``."""
    return SENDER.main(argv)


if __name__ == "__main__":
    sys.exit(main())
