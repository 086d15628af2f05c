"""Write utcp traffic as classic libpcap captures that Wireshark reads as TCP.

utcp carries one TCP segment per UDP datagram (see ``wire-format.md``).  A
capture of the UDP traffic would show opaque UDP payloads, so this module
instead writes each segment as if it had travelled in a bare IP packet from
the sender's UDP address to the receiver's: a synthetic IPv4 (or IPv6)
header is prepended and the TCP checksum is rewritten for the real
addresses, so tools such as Wireshark/tshark dissect the conversation as
ordinary TCP with valid checksums.  The TCP ports stay the virtual ports.

The file uses link type ``LINKTYPE_RAW`` (101) and microsecond timestamps.
This module does no I/O scheduling of its own: callers pass timestamps in
and it writes to a plain binary file object.
"""

from __future__ import annotations

import ipaddress
import math
import os
import struct
from types import TracebackType
from typing import BinaryIO

__all__ = ["LINKTYPE_RAW", "PCAP_MAGIC", "PcapWriter", "internet_checksum"]

PCAP_MAGIC = 0xA1B2C3D4
"""Magic number of a classic libpcap file with microsecond timestamps."""

LINKTYPE_RAW = 101
"""Link type for packets that begin directly with an IPv4 or IPv6 header."""

_PROTO_TCP = 6
_TTL = 64
_TCP_MIN_HEADER = 20
_TCP_CHECKSUM_OFFSET = 16
_MAX_U16 = 0xFFFF

_GLOBAL_HEADER = struct.Struct("<IHHiIII")
_REC = struct.Struct("<IIII")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_U16 = struct.Struct("!H")

_IPV4_HLEN = _IPV4.size  # 20
_IPV6_HLEN = _IPV6.size  # 40

Address = tuple[str, int] | tuple[str, int, int, int]
"""A UDP socket address: ``(ip, port)`` or IPv6 ``(ip, port, flowinfo, scope_id)``."""


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """Return the RFC 1071 Internet checksum of *data*.

    This is the 16-bit one's complement of the one's complement sum of the
    data taken as big-endian 16-bit words (an odd final byte is padded with a
    zero byte).  Data that already contains a correct checksum yields 0.

    The sum is computed without a per-word loop: because ``2**16 % 0xFFFF ==
    1``, the whole buffer read as one big-endian integer is congruent modulo
    0xFFFF to the sum of its 16-bit words.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return _fold_complement(value % _MAX_U16, value != 0)


def _fold_complement(residue: int, nonzero: bool) -> int:
    """Complement a one's complement sum given as a residue modulo 0xFFFF.

    For data that is not all zero the true end-around-carry sum lies in
    ``1..0xFFFF``, so a residue of 0 stands for 0xFFFF; for all-zero data the
    sum is 0.
    """
    if residue == 0 and nonzero:
        residue = _MAX_U16
    return ~residue & _MAX_U16


class PcapWriter:
    """Write TCP segments carried by utcp to a classic libpcap capture file.

    *file* is a path (opened for binary writing, truncating, and closed by
    :meth:`close`) or an already open binary file object (left open by
    :meth:`close`, which only flushes it).  The global header is written
    immediately.  *snaplen* caps the number of bytes stored per packet; the
    original length is always recorded.

    The writer is a context manager; it is not thread- or task-safe.
    """

    def __init__(self, file: str | os.PathLike[str] | BinaryIO, *, snaplen: int = 65535) -> None:
        if snaplen <= 0:
            raise ValueError("snaplen must be positive")
        self._snaplen = snaplen
        self._owns_file = isinstance(file, (str, os.PathLike))
        if isinstance(file, (str, os.PathLike)):
            self._file: BinaryIO = open(file, "wb")
        else:
            self._file = file
        self._closed = False
        self._ip_id = 0
        self.packets_written = 0
        """Number of packet records written so far."""
        # ip string -> (is_ipv4, packed address as 4 or 16 bytes)
        self._addr_cache: dict[str, tuple[bool, bytes]] = {}
        self._file.write(_GLOBAL_HEADER.pack(PCAP_MAGIC, 2, 4, 0, 0, snaplen, LINKTYPE_RAW))

    @property
    def snaplen(self) -> int:
        """Maximum number of bytes stored for each packet."""
        return self._snaplen

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def _resolve(self, ip: str) -> tuple[bool, bytes]:
        cached = self._addr_cache.get(ip)
        if cached is not None:
            return cached
        addr = ipaddress.ip_address(ip)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        result = (isinstance(addr, ipaddress.IPv4Address), addr.packed)
        if len(self._addr_cache) >= 4096:
            self._addr_cache.clear()
        self._addr_cache[ip] = result
        return result

    def write_segment(self, ts: float, src: Address, dst: Address, segment: bytes) -> None:
        """Record one TCP *segment* sent from UDP address *src* to *dst* at time *ts*.

        *ts* is a POSIX timestamp in seconds (stored to the microsecond).
        *src* and *dst* are UDP socket addresses whose IPs (IPv4, IPv6, or
        IPv4-mapped IPv6, which is written as IPv4) become the synthetic IP
        header's addresses.  *segment* is the exact UDP payload utcp sent.
        Its TCP checksum is rewritten to be valid for those addresses; a
        segment shorter than the 20-byte TCP header is written unchanged.
        Malformed segments never raise.
        """
        if self._closed:
            raise ValueError("write to closed PcapWriter")
        src_v4, src_ip = self._resolve(src[0])
        dst_v4, dst_ip = self._resolve(dst[0])
        seg_len = len(segment)

        if src_v4 and dst_v4:
            ip_hlen = _IPV4_HLEN
        else:
            # Mixed families: show both as IPv6, IPv4 ones in mapped form.
            if src_v4:
                src_ip = b"\0" * 10 + b"\xff\xff" + src_ip
            if dst_v4:
                dst_ip = b"\0" * 10 + b"\xff\xff" + dst_ip
            ip_hlen = _IPV6_HLEN

        orig_len = ip_hlen + seg_len
        incl_len = min(orig_len, self._snaplen)
        rec = _REC.size
        buf = bytearray(rec + orig_len)

        micros = round(ts * 1_000_000) if ts > 0 and math.isfinite(ts) else 0
        sec, usec = divmod(micros, 1_000_000)
        _REC.pack_into(buf, 0, sec & 0xFFFFFFFF, usec, incl_len, orig_len)

        if ip_hlen == _IPV4_HLEN:
            ip_id = self._ip_id
            self._ip_id = (ip_id + 1) & _MAX_U16
            total = min(orig_len, _MAX_U16)
            _IPV4.pack_into(
                buf, rec, 0x45, 0, total, ip_id, 0x4000, _TTL, _PROTO_TCP, 0, src_ip, dst_ip
            )
            _U16.pack_into(buf, rec + 10, internet_checksum(memoryview(buf)[rec : rec + 20]))
            # Pseudo-header: src, dst, zero, protocol, TCP length.
            pseudo = int.from_bytes(src_ip + dst_ip, "big") + _PROTO_TCP + (seg_len & _MAX_U16)
        else:
            _IPV6.pack_into(
                buf, rec, 0x60000000, min(seg_len, _MAX_U16), _PROTO_TCP, _TTL, src_ip, dst_ip
            )
            # Pseudo-header: src, dst, 32-bit upper-layer length, zero, next header.
            pseudo = int.from_bytes(src_ip + dst_ip, "big") + seg_len + _PROTO_TCP

        start = rec + ip_hlen
        buf[start:] = segment
        if seg_len >= _TCP_MIN_HEADER:
            # Sum of the segment with its checksum field taken as zero: the
            # field is 16-bit aligned, so subtracting its value removes it.
            value = int.from_bytes(segment, "big")
            if seg_len & 1:
                value <<= 8
            off = start + _TCP_CHECKSUM_OFFSET
            old = (buf[off] << 8) | buf[off + 1]
            # The pseudo-header's protocol field is nonzero, so the sum is too.
            checksum = _fold_complement((value - old + pseudo) % _MAX_U16, True)
            _U16.pack_into(buf, off, checksum)

        if incl_len < orig_len:
            del buf[rec + incl_len :]
        self._file.write(buf)
        self.packets_written += 1

    def flush(self) -> None:
        """Flush buffered data to the underlying file."""
        if not self._closed:
            self._file.flush()

    def close(self) -> None:
        """Flush, and close the file if this writer opened it.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._file.flush()
        finally:
            if self._owns_file:
                self._file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
