"""Linux UDP segmentation offloads (GSO for sends, GRO for receives), with fallbacks.

With ``UDP_SEGMENT`` one ``sendmsg`` carries a run of equal-sized datagrams
(the last may be shorter) that the kernel splits; with ``UDP_GRO`` one
``recvmsg`` may return several datagrams glued together plus their size.
Both cut system calls per segment, which dominate a userspace transport.
Python 3.11's ``socket`` module does not name the constants, so they are
defined here (from ``linux/udp.h``).  Anything unsupported falls back to one
datagram per call.
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import Any

__all__ = [
    "GRO_CMSG_SPACE",
    "MAX_GSO_BYTES",
    "MAX_GSO_SEGMENTS",
    "enable_gro",
    "gso_supported",
    "gro_size",
]

SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
UDP_GRO = getattr(socket, "UDP_GRO", 104)
MAX_GSO_SEGMENTS = 64  # UDP_MAX_SEGMENTS
MAX_GSO_BYTES = 65000  # stays under the 64 KiB IP datagram limit with headers
GRO_CMSG_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
_U16 = struct.Struct("=H")
_INT = struct.Struct("=i")


SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def set_buffers(sock: socket.socket | Any, size: int) -> None:
    """Ask for ``size``-byte kernel buffers both ways.

    The kernel caps ``SO_RCVBUF``/``SO_SNDBUF`` at ``net.core.rmem_max`` /
    ``wmem_max`` (often only 208 KiB), which drops bursts within a congestion
    window; a privileged process may exceed the cap with the ``*FORCE``
    variants, which are tried when the plain request was capped.
    """
    for opt, force in ((socket.SO_RCVBUF, SO_RCVBUFFORCE), (socket.SO_SNDBUF, SO_SNDBUFFORCE)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
            if sock.getsockopt(socket.SOL_SOCKET, opt) < size and sys.platform.startswith("linux"):
                sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            pass  # not permitted or not supported: keep what we got


def gso_supported(sock: socket.socket) -> bool:
    """Whether the kernel knows ``UDP_SEGMENT`` for this socket."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


def enable_gro(sock: socket.socket) -> bool:
    """Turn ``UDP_GRO`` on; False if the kernel refuses."""
    if not sys.platform.startswith("linux") or not GRO_CMSG_SPACE:
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def gso_cmsg(size: int) -> list[tuple[int, int, bytes]]:
    """The ancillary data asking the kernel to cut a send into ``size``-byte datagrams."""
    return [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))]


def gro_size(ancdata: list[tuple[int, int, bytes]]) -> int:
    """The datagram size reported by ``UDP_GRO`` in ``recvmsg`` ancillary data (0: none)."""
    for level, kind, data in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
            return int(_INT.unpack_from(data)[0])
    return 0
