"""Tests for utcp.pcap: captures that scapy and tshark read as plain TCP."""

from __future__ import annotations

import io
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet
from scapy.utils import rdpcap

from utcp.pcap import LINKTYPE_RAW, PCAP_MAGIC, PcapWriter, internet_checksum

Addr = tuple[str, int]


def reference_checksum(data: bytes) -> int:
    """Straightforward RFC 1071 checksum, one 16-bit word at a time."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def utcp_segment(payload: bytes = b"", **fields: Any) -> bytes:
    """A TCP segment as utcp puts it on the wire (zero-address checksum)."""
    pkt = IP(src="0.0.0.0", dst="0.0.0.0") / TCP(**fields)
    if payload:
        pkt = pkt / payload
    return bytes(pkt)[20:]


def conversation(a_port: int = 5000, b_port: int = 6000) -> list[tuple[bool, bytes]]:
    """A small TCP conversation; each item is (sent_by_client, segment)."""
    opts = [("MSS", 1452), ("SAckOK", b""), ("WScale", 7)]
    c, s = 1000, 500000
    msgs: list[tuple[bool, bytes]] = [
        (True, utcp_segment(sport=a_port, dport=b_port, flags="S", seq=c, options=opts)),
        (
            False,
            utcp_segment(sport=b_port, dport=a_port, flags="SA", seq=s, ack=c + 1, options=opts),
        ),
        (True, utcp_segment(sport=a_port, dport=b_port, flags="A", seq=c + 1, ack=s + 1)),
        (
            True,
            utcp_segment(
                b"hello, world",
                sport=a_port,
                dport=b_port,
                flags="PA",
                seq=c + 1,
                ack=s + 1,
            ),
        ),
        (
            False,
            utcp_segment(
                b"odd",  # odd-length segment exercises the checksum padding
                sport=b_port,
                dport=a_port,
                flags="PA",
                seq=s + 1,
                ack=c + 13,
            ),
        ),
        (True, utcp_segment(sport=a_port, dport=b_port, flags="FA", seq=c + 13, ack=s + 4)),
        (False, utcp_segment(sport=b_port, dport=a_port, flags="FA", seq=s + 4, ack=c + 14)),
        (True, utcp_segment(sport=a_port, dport=b_port, flags="A", seq=c + 14, ack=s + 5)),
    ]
    return msgs


TIMESTAMPS = [1700000000.123456 + i * 0.000001 + i * 0.25 for i in range(8)]


def write_conversation(path: Path, client: Addr, server: Addr) -> list[tuple[float, bytes]]:
    written = []
    with PcapWriter(path) as w:
        for ts, (from_client, seg) in zip(TIMESTAMPS, conversation(), strict=True):
            src, dst = (client, server) if from_client else (server, client)
            w.write_segment(ts, src, dst, seg)
            written.append((ts, seg))
        assert w.packets_written == 8
    return written


def read_records(data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """Parse a little-endian classic pcap file by hand."""
    magic, vmaj, vmin, _tz, _sig, _snap, link = struct.unpack_from("<IHHiIII", data, 0)
    assert (magic, vmaj, vmin, link) == (PCAP_MAGIC, 2, 4, LINKTYPE_RAW)
    out = []
    off = 24
    while off < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, off)
        off += 16
        out.append((sec, usec, incl, orig, data[off : off + incl]))
        off += incl
    assert off == len(data)
    return out


def ip_checksum_ok(ip: Packet) -> bool:
    raw = bytes(ip)
    rebuilt = ip.__class__(raw)
    if isinstance(rebuilt, IP):
        del rebuilt.chksum
    del rebuilt[TCP].chksum
    return bytes(rebuilt) == raw


# --- internet_checksum -------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\0",
        b"\0\0\0\0",
        b"\xff",
        b"\xff\xff",
        b"\xff\xff\xff\xff",
        b"\x00\x01\xff\xfe",  # sums to 0xFFFF: residue 0 but data nonzero
        b"\x45\x00\x00\x73\x00\x00\x40\x00\x40\x11\x00\x00\xc0\xa8\x00\x01\xc0\xa8\x00\xc7",
        b"\x01\x02\x03",
    ],
)
def test_internet_checksum_known(data: bytes) -> None:
    assert internet_checksum(data) == reference_checksum(data)


def test_internet_checksum_random() -> None:
    rng = random.Random(1234)
    for n in list(range(0, 70)) + [1499, 1500, 9001]:
        for _ in range(20):
            data = rng.randbytes(n)
            assert internet_checksum(data) == reference_checksum(data), (n, data.hex())


def test_internet_checksum_rfc1071_example() -> None:
    # RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to ddf2.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF
    # Appending the checksum makes the whole verify to 0.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert internet_checksum(data + struct.pack("!H", internet_checksum(data))) == 0


# --- file format -------------------------------------------------------------


def test_global_header() -> None:
    buf = io.BytesIO()
    w = PcapWriter(buf, snaplen=1234)
    assert buf.getvalue() == struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 1234, 101)
    assert w.packets_written == 0
    w.close()
    assert not buf.closed  # caller-owned file objects stay open
    assert w.closed


def test_path_is_closed_and_context_manager(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    with PcapWriter(os.fspath(path)) as w:
        w.write_segment(1.0, ("10.0.0.1", 1), ("10.0.0.2", 2), utcp_segment(sport=1, dport=2))
        w.flush()
        assert path.stat().st_size == 24 + 16 + 40
    assert w._file.closed
    w.close()  # idempotent
    with pytest.raises(ValueError):
        w.write_segment(1.0, ("10.0.0.1", 1), ("10.0.0.2", 2), b"")


def test_timestamps_and_lengths(tmp_path: Path) -> None:
    path = tmp_path / "t.pcap"
    written = write_conversation(path, ("192.0.2.1", 40000), ("198.51.100.7", 9000))
    records = read_records(path.read_bytes())
    assert len(records) == len(written)
    for (sec, usec, incl, orig, data), (ts, seg) in zip(records, written, strict=True):
        micros = round(ts * 1_000_000)
        assert (sec, usec) == divmod(micros, 1_000_000)
        assert incl == orig == 20 + len(seg) == len(data)
    assert records[0][:2] == (1700000000, 123456)
    # scapy sees the same times
    pkts = rdpcap(str(path))
    for pkt, (ts, _seg) in zip(pkts, written, strict=True):
        assert round(float(pkt.time) * 1_000_000) == round(ts * 1_000_000)


def test_snaplen_truncates(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with PcapWriter(buf, snaplen=40) as w:
        seg = utcp_segment(b"x" * 100, sport=1, dport=2, flags="PA")
        w.write_segment(5.5, ("10.0.0.1", 1), ("10.0.0.2", 2), seg)
    [(sec, usec, incl, orig, data)] = read_records(buf.getvalue())
    assert (sec, usec) == (5, 500000)
    assert incl == 40 == len(data)
    assert orig == 20 + len(seg)


# --- IPv4 / IPv6 conversations ----------------------------------------------


@pytest.mark.parametrize(
    ("client", "server", "ip_layer"),
    [
        (("192.0.2.1", 40000), ("198.51.100.7", 9000), IP),
        (("2001:db8::1", 40000), ("2001:db8:ffff::abcd", 9000), IPv6),
        (("::1", 1), ("fe80::1", 2), IPv6),
    ],
)
def test_conversation_roundtrip(
    tmp_path: Path, client: Addr, server: Addr, ip_layer: type[Packet]
) -> None:
    path = tmp_path / "conv.pcap"
    write_conversation(path, client, server)
    pkts = rdpcap(str(path))
    convo = conversation()
    assert len(pkts) == len(convo)
    ip_ids = []
    for pkt, (from_client, seg) in zip(pkts, convo, strict=True):
        assert isinstance(pkt, ip_layer), pkt.summary()
        src, dst = (client, server) if from_client else (server, client)
        assert pkt.src == src[0]
        assert pkt.dst == dst[0]
        if ip_layer is IP:
            assert pkt.proto == 6
            assert pkt.ttl == 64
            assert pkt.len == 20 + len(seg)
            assert pkt.ihl == 5 and pkt.version == 4
            ip_ids.append(pkt.id)
        else:
            assert pkt.nh == 6
            assert pkt.hlim == 64
            assert pkt.plen == len(seg)
        original = TCP(seg)
        got = pkt[TCP]
        for field in ("sport", "dport", "seq", "ack", "flags", "window", "dataofs", "options"):
            assert got.getfieldval(field) == original.getfieldval(field), field
        assert bytes(got.payload) == bytes(original.payload)
        # Everything but the checksum field is byte-identical.
        raw = bytes(got)
        assert raw[:16] == seg[:16] and raw[18:] == seg[18:]
        assert ip_checksum_ok(pkt[ip_layer])
        if ip_layer is IP:
            assert internet_checksum(bytes(pkt)[:20]) == 0
    if ip_ids:
        assert len(set(ip_ids)) == len(ip_ids)
        assert ip_ids == list(range(ip_ids[0], ip_ids[0] + len(ip_ids)))
    flags = [str(p[TCP].flags) for p in pkts[:3]]
    assert flags == ["S", "SA", "A"]
    assert bytes(pkts[3][TCP].payload) == b"hello, world"
    assert bytes(pkts[4][TCP].payload) == b"odd"


def test_checksum_rewritten_even_if_original_bad() -> None:
    seg = bytearray(utcp_segment(b"data", sport=7, dport=8, flags="PA", seq=1, ack=2))
    seg[16:18] = b"\x12\x34"  # garbage checksum in the input
    buf = io.BytesIO()
    with PcapWriter(buf) as w:
        w.write_segment(0.0, ("10.1.2.3", 1), ("10.4.5.6", 2), bytes(seg))
    pkt = rdpcap(io.BytesIO(buf.getvalue()))[0]
    assert ip_checksum_ok(pkt[IP])


def test_ipv6_four_tuple_addresses() -> None:
    buf = io.BytesIO()
    seg = utcp_segment(sport=1, dport=2, flags="S")
    with PcapWriter(buf) as w:
        w.write_segment(1.0, ("2001:db8::1", 1, 0, 0), ("2001:db8::2", 2, 0, 0), seg)
    pkt = rdpcap(io.BytesIO(buf.getvalue()))[0]
    assert isinstance(pkt, IPv6)
    assert (pkt.src, pkt.dst) == ("2001:db8::1", "2001:db8::2")
    assert ip_checksum_ok(pkt[IPv6])


def test_ipv4_mapped_written_as_ipv4() -> None:
    buf = io.BytesIO()
    seg = utcp_segment(b"x", sport=1, dport=2, flags="PA")
    with PcapWriter(buf) as w:
        w.write_segment(1.0, ("::ffff:127.0.0.1", 1111), ("::ffff:10.0.0.9", 2222), seg)
        w.write_segment(2.0, ("::ffff:127.0.0.1", 1111), ("127.0.0.1", 2222), seg)
    pkts = rdpcap(io.BytesIO(buf.getvalue()))
    for pkt, dst in zip(pkts, ["10.0.0.9", "127.0.0.1"], strict=True):
        assert isinstance(pkt, IP)
        assert pkt.src == "127.0.0.1"
        assert pkt.dst == dst
        assert ip_checksum_ok(pkt[IP])


def test_mixed_families_written_as_ipv6() -> None:
    buf = io.BytesIO()
    seg = utcp_segment(sport=1, dport=2, flags="S")
    with PcapWriter(buf) as w:
        w.write_segment(1.0, ("192.0.2.1", 1), ("2001:db8::2", 2), seg)
    pkt = rdpcap(io.BytesIO(buf.getvalue()))[0]
    assert isinstance(pkt, IPv6)
    assert (pkt.src, pkt.dst) == ("::ffff:192.0.2.1", "2001:db8::2")
    assert ip_checksum_ok(pkt[IPv6])


# --- odd input ---------------------------------------------------------------


@pytest.mark.parametrize("segment", [b"", b"\x01\x02\x03\x04\x05", b"\xff" * 19])
@pytest.mark.parametrize("addrs", [("10.0.0.1", "10.0.0.2"), ("2001:db8::1", "2001:db8::2")])
def test_short_segment_written_raw(segment: bytes, addrs: tuple[str, str]) -> None:
    buf = io.BytesIO()
    with PcapWriter(buf) as w:
        w.write_segment(3.25, (addrs[0], 1), (addrs[1], 2), segment)
        assert w.packets_written == 1
    [(sec, usec, incl, orig, data)] = read_records(buf.getvalue())
    hlen = 20 if ":" not in addrs[0] else 40
    assert (sec, usec) == (3, 250000)
    assert incl == orig == hlen + len(segment)
    assert data[hlen:] == segment
    if hlen == 20:
        assert internet_checksum(data[:20]) == 0
        assert struct.unpack_from("!H", data, 2)[0] == 20 + len(segment)
    else:
        assert struct.unpack_from("!H", data, 4)[0] == len(segment)


@pytest.mark.parametrize(
    "segment",
    [
        b"\0" * 20,  # data offset 0
        b"\xff" * 20,  # data offset 15 beyond the segment
        b"\xff" * 21,
        bytes(range(256)) * 3,
    ],
)
def test_malformed_segments_do_not_raise(segment: bytes) -> None:
    buf = io.BytesIO()
    with PcapWriter(buf) as w:
        w.write_segment(1.0, ("10.0.0.1", 1), ("10.0.0.2", 2), segment)
    [(_s, _u, _i, _o, data)] = read_records(buf.getvalue())
    assert data[20:36] == segment[:16] and data[38:] == segment[18:]
    # The rewritten TCP checksum verifies over the pseudo-header + segment.
    tcp = data[20:]
    pseudo = data[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
    assert internet_checksum(pseudo + tcp) == 0


@pytest.mark.parametrize("ts", [-1.0, 0.0, float("nan"), float("inf"), 0.9999999])
def test_odd_timestamps_do_not_raise(ts: float) -> None:
    buf = io.BytesIO()
    with PcapWriter(buf) as w:
        w.write_segment(ts, ("10.0.0.1", 1), ("10.0.0.2", 2), b"abc")
    [(sec, usec, *_rest)] = read_records(buf.getvalue())
    assert 0 <= usec < 1_000_000
    if ts == 0.9999999:
        assert (sec, usec) == (1, 0)


def test_ip_id_wraps() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf) as w:
        for _ in range(65537):
            w.write_segment(1.0, ("10.0.0.1", 1), ("10.0.0.2", 2), b"")
        assert w.packets_written == 65537
    data = buf.getvalue()
    rec = 16 + 20
    first = struct.unpack_from("!H", data, 24 + 16 + 4)[0]
    last = struct.unpack_from("!H", data, 24 + 65536 * rec + 16 + 4)[0]
    assert first == last == 0


# --- tshark ------------------------------------------------------------------


TSHARK = shutil.which("tshark")


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (apt install tshark)")
@pytest.mark.parametrize(
    ("client", "server"),
    [
        (("192.0.2.1", 40000), ("198.51.100.7", 9000)),
        (("2001:db8::1", 40000), ("2001:db8::2", 9000)),
    ],
)
def test_tshark_reads_tcp(tmp_path: Path, client: Addr, server: Addr) -> None:
    assert TSHARK is not None
    path = tmp_path / "conv.pcap"
    write_conversation(path, client, server)
    proc = subprocess.run(
        [
            TSHARK,
            "-n",
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "tcp.flags.str",
            "-e",
            "tcp.checksum.status",
            "-e",
            "ip.checksum.status",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    rows = [line.split("\t") for line in proc.stdout.splitlines() if line.strip()]
    assert len(rows) == len(conversation()), proc.stdout + proc.stderr
    # tcp.flags.str renders e.g. "··········S·"; keep only the set flags.
    flags = [row[0].replace("\u00b7", "").replace(".", "").strip() for row in rows]
    assert flags[:3] == ["S", "AS", "A"], flags
    assert flags[5] == "AF", flags
    # Checksum status values (epan/proto.h): 0 Bad, 1 Good, 2 Unverified,
    # 3 Not present.  Only a verified-good checksum counts.
    for row in rows:
        assert row[1] in ("Good", "1"), rows
        if client[0].count(":") == 0:
            assert row[2] in ("Good", "1"), rows
