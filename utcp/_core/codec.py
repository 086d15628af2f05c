"""The segment codec: one TCP segment (RFC 9293 3.1) per UDP datagram.

The format is fixed by the project's wire-format spec (version 1): a real
TCP header with virtual ports, options, then data; the checksum is the
RFC 1071 Internet checksum over a pseudo-header whose addresses are zero
(so it survives NATs) followed by the segment.

:func:`decode` never raises anything but :class:`CodecError`, whatever bytes
it is given.

Checksum trick: 2**16 is congruent to 1 modulo 0xFFFF, so the one's
complement sum of a run of big-endian 16-bit words is congruent to the whole
run read as one big integer, modulo 0xFFFF.  ``int.from_bytes(...) % 0xFFFF``
therefore computes the sum at C speed, with no per-word Python loop.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "ACK",
    "CWR",
    "ECE",
    "FIN",
    "PSH",
    "RST",
    "SYN",
    "URG",
    "CodecError",
    "Segment",
    "checksum",
    "decode",
    "encode",
    "encode_fields",
    "flags_str",
]

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80

OPT_EOL: Final = 0
OPT_NOP: Final = 1
OPT_MSS: Final = 2
OPT_WSCALE: Final = 3
OPT_SACK_PERMITTED: Final = 4
OPT_SACK: Final = 5
OPT_TIMESTAMPS: Final = 8

HEADER = struct.Struct("!HHIIHHHH")
HEADER_LEN: Final = 20
_TS_FAST = struct.Struct("!4xII")  # NOP NOP kind len tsval tsecr
_TS_FAST_PREFIX: Final = b"\x01\x01\x08\x0a"
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U32PAIR = struct.Struct("!II")

_FLAG_NAMES = (
    (CWR, "C"),
    (ECE, "E"),
    (URG, "U"),
    (ACK, "A"),
    (PSH, "P"),
    (RST, "R"),
    (SYN, "S"),
    (FIN, "F"),
)


class CodecError(Exception):
    """A datagram is not a well-formed utcp segment (the codec's only error)."""


def flags_str(flags: int) -> str:
    """Short flag names, e.g. ``"AS"`` for SYN+ACK (most significant bit first)."""
    return "".join(name for bit, name in _FLAG_NAMES if flags & bit) or "."


class Segment:
    """A decoded (or to-be-encoded) TCP segment.

    ``sack_blocks`` holds ``(left, right)`` edges; ``timestamps`` holds
    ``(tsval, tsecr)``.  Options absent from the segment are ``None`` (or
    false / empty).
    """

    __slots__ = (
        "src_port",
        "dst_port",
        "seq",
        "ack",
        "flags",
        "window",
        "urgent",
        "mss",
        "wscale",
        "sack_permitted",
        "sack_blocks",
        "timestamps",
        "payload",
    )

    def __init__(
        self,
        src_port: int,
        dst_port: int,
        seq: int,
        ack: int = 0,
        flags: int = 0,
        window: int = 0,
        payload: bytes = b"",
        *,
        urgent: int = 0,
        mss: int | None = None,
        wscale: int | None = None,
        sack_permitted: bool = False,
        sack_blocks: tuple[tuple[int, int], ...] = (),
        timestamps: tuple[int, int] | None = None,
    ) -> None:
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.urgent = urgent
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sack_blocks = sack_blocks
        self.timestamps = timestamps
        self.payload = payload

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies: data, plus one each for SYN and FIN."""
        return len(self.payload) + (self.flags & SYN and 1) + (self.flags & FIN and 1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Segment):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = [
            f"{self.src_port}>{self.dst_port}",
            f"[{flags_str(self.flags)}]",
            f"seq={self.seq}",
        ]
        if self.flags & ACK:
            parts.append(f"ack={self.ack}")
        parts.append(f"win={self.window}")
        if self.mss is not None:
            parts.append(f"mss={self.mss}")
        if self.wscale is not None:
            parts.append(f"ws={self.wscale}")
        if self.sack_permitted:
            parts.append("sackOK")
        if self.sack_blocks:
            parts.append(f"sack={list(self.sack_blocks)}")
        if self.timestamps is not None:
            parts.append(f"ts={self.timestamps[0]},{self.timestamps[1]}")
        if self.payload:
            parts.append(f"len={len(self.payload)}")
        return f"Segment({' '.join(parts)})"


def _residue(data: bytes | bytearray | memoryview) -> int:
    """One's complement sum of ``data`` (zero-padded to even length), modulo 0xFFFF."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value % 0xFFFF


def checksum(segment: bytes | bytearray | memoryview) -> int:
    """The wire-format checksum of a whole segment whose checksum field is zero."""
    n = len(segment)
    total = (_residue(segment) + 6 + n) % 0xFFFF
    # A residue of 0 stands for a sum of 0xFFFF (the sum is never all-zero
    # because the pseudo-header carries protocol 6), whose complement is 0.
    return (~total) & 0xFFFF if total else 0


def _encode_options(seg: Segment) -> bytes:
    opts = bytearray()
    if seg.mss is not None:
        opts += struct.pack("!BBH", OPT_MSS, 4, seg.mss)
    if seg.sack_permitted:
        opts += b"\x04\x02" if seg.timestamps is not None else b"\x01\x01\x04\x02"
    if seg.timestamps is not None:
        if not seg.sack_permitted:
            opts += b"\x01\x01"
        opts += b"\x08\x0a" + _U32PAIR.pack(*seg.timestamps)
    if seg.wscale is not None:
        opts += struct.pack("!BBBB", OPT_NOP, OPT_WSCALE, 3, seg.wscale)
    if seg.sack_blocks:
        opts += struct.pack("!BBBB", OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(seg.sack_blocks))
        for left, right in seg.sack_blocks:
            opts += _U32PAIR.pack(left, right)
    if len(opts) & 3:
        opts += b"\x00" * (4 - (len(opts) & 3))
    if len(opts) > 40:
        raise CodecError(f"options take {len(opts)} bytes, more than 40")
    return bytes(opts)


def options_length(seg: Segment) -> int:
    """Bytes of options (padded) that :func:`encode` would write for ``seg``."""
    return len(_encode_options(seg))


def encode(seg: Segment) -> bytes:
    """Encode ``seg`` to the bytes of one datagram, with a valid checksum.

    Options are laid out as Linux does: MSS, SACK-permitted, timestamps,
    window scale on SYNs; NOP NOP timestamps and NOP NOP SACK blocks on other
    segments.
    """
    if (
        seg.timestamps is not None
        and not seg.sack_permitted
        and seg.mss is None
        and not (seg.wscale is not None or seg.sack_blocks)
    ):
        opts = _TS_FAST_PREFIX + _U32PAIR.pack(*seg.timestamps)
    elif (
        seg.mss is None
        and seg.wscale is None
        and not seg.sack_permitted
        and not seg.sack_blocks
        and seg.timestamps is None
    ):
        opts = b""
    else:
        opts = _encode_options(seg)
    doff = 5 + (len(opts) >> 2)
    header = HEADER.pack(
        seg.src_port,
        seg.dst_port,
        seg.seq,
        seg.ack,
        (doff << 12) | (seg.flags & 0xFF),
        seg.window,
        0,
        seg.urgent,
    )
    payload = seg.payload
    # Header and options are a multiple of 4 bytes, so their residue adds to
    # the payload's without concatenating first.
    n = len(header) + len(opts) + len(payload)
    total = (
        int.from_bytes(header, "big") % 0xFFFF
        + (int.from_bytes(opts, "big") % 0xFFFF if opts else 0)
        + _residue(payload)
        + 6
        + n
    ) % 0xFFFF
    csum = (~total) & 0xFFFF if total else 0
    return b"".join((header[:16], _U16.pack(csum), header[18:], opts, payload))


_HDR_TS = struct.Struct("!HHIIHHHHBBBBII")  # header + NOP NOP TS(10): 32 bytes


def encode_fields(
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: bytes | bytearray | memoryview,
    ts: tuple[int, int] | None,
) -> bytes:
    """Fast path of :func:`encode` for the common segment: no options but timestamps.

    Produces exactly the bytes ``encode(Segment(..., timestamps=ts))`` would.
    """
    if ts is None:
        header = HEADER.pack(src_port, dst_port, seq, ack, 0x5000 | flags, window, 0, 0)
    else:
        header = _HDR_TS.pack(
            src_port, dst_port, seq, ack, 0x8000 | flags, window, 0, 0, 1, 1, 8, 10, ts[0], ts[1]
        )
    hv = int.from_bytes(header, "big")
    n = len(header) + len(payload)
    if payload:
        pv = int.from_bytes(payload, "big")
        if len(payload) & 1:
            pv <<= 8
        total = (hv + pv + 6 + n) % 0xFFFF
    else:
        total = (hv + 6 + n) % 0xFFFF
    csum = (~total) & 0xFFFF if total else 0
    return b"".join((header[:16], _U16.pack(csum), header[18:], payload))


def _decode_options(seg: Segment, opts: bytes) -> None:
    i = 0
    n = len(opts)
    sack: list[tuple[int, int]] = []
    while i < n:
        kind = opts[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise CodecError(f"option kind {kind} has no length byte")
        length = opts[i + 1]
        if length < 2 or i + length > n:
            raise CodecError(f"option kind {kind} has bad length {length}")
        if kind == OPT_MSS:
            if length != 4:
                raise CodecError(f"MSS option length {length} != 4")
            seg.mss = _U16.unpack_from(opts, i + 2)[0]
        elif kind == OPT_WSCALE:
            if length != 3:
                raise CodecError(f"window scale option length {length} != 3")
            seg.wscale = opts[i + 2]
        elif kind == OPT_SACK_PERMITTED:
            if length != 2:
                raise CodecError(f"SACK-permitted option length {length} != 2")
            seg.sack_permitted = True
        elif kind == OPT_SACK:
            if (length - 2) % 8 or length == 2:
                raise CodecError(f"SACK option length {length} is not 2+8n")
            for j in range(i + 2, i + length, 8):
                sack.append(_U32PAIR.unpack_from(opts, j))
        elif kind == OPT_TIMESTAMPS:
            if length != 10:
                raise CodecError(f"timestamps option length {length} != 10")
            seg.timestamps = _U32PAIR.unpack_from(opts, i + 2)
        i += length
    if sack:
        seg.sack_blocks = tuple(sack)


def decode(data: bytes | bytearray | memoryview, *, verify: bool = True) -> Segment:
    """Decode one datagram into a :class:`Segment`.

    Raises :class:`CodecError` (and nothing else) for a datagram shorter than
    20 bytes, a data offset below 5 or beyond the datagram, a bad checksum
    (when ``verify``), port 0, or malformed options.
    """
    n = len(data)
    if n < HEADER_LEN:
        raise CodecError(f"datagram of {n} bytes is shorter than a TCP header")
    sport, dport, seqno, ackno, off_flags, window, _csum, urgent = HEADER.unpack_from(data)
    hlen = (off_flags >> 12) << 2
    if hlen < HEADER_LEN or hlen > n:
        raise CodecError(f"data offset {hlen >> 2} out of range for {n} bytes")
    if verify:
        value = int.from_bytes(data, "big")
        if n & 1:
            value <<= 8
        if (value + 6 + n) % 0xFFFF:
            raise CodecError("bad checksum")
    if sport == 0 or dport == 0:
        raise CodecError("port 0 is not valid on the wire")
    seg = Segment(sport, dport, seqno, ackno, off_flags & 0xFF, window, urgent=urgent)
    if hlen > HEADER_LEN:
        if hlen == 32 and data[20:24] == _TS_FAST_PREFIX:
            seg.timestamps = _TS_FAST.unpack_from(data, 20)
        else:
            _decode_options(seg, bytes(data[HEADER_LEN:hlen]))
    seg.payload = bytes(data[hlen:])
    return seg
