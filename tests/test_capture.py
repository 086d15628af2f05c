"""pcap= on an endpoint: captures that scapy (and tshark, when installed) read as TCP."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import trio
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

import utcp

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)


async def _conversation(pcap: Path) -> tuple[int, int]:
    async with (
        utcp.open_endpoint(("127.0.0.1", 0), pcap=pcap, msl=0.05) as server_ep,
        utcp.open_endpoint(("127.0.0.1", 0)) as client_ep,
    ):
        listener = server_ep.listen()
        client = await client_ep.connect(server_ep.local_address)
        server = await listener.accept()
        await client.send(b"hello capture")
        assert await server.recv() == b"hello capture"
        await client.shutdown()
        assert await server.recv() == b""
        await server.close()
        await client.close()
        with trio.fail_after(5):
            await server.wait_closed()
        return client.local_port, server.local_port


async def test_capture_shows_handshake_data_and_close(tmp_path: Path) -> None:
    pcap = tmp_path / "conv.pcap"
    cport, sport = await _conversation(pcap)
    packets = [p for p in rdpcap(str(pcap)) if TCP in p]
    flags = [str(p[TCP].flags) for p in packets]
    # 3-way handshake, data, client FIN and its ACK, server FIN and its ACK
    assert flags[:3] == ["S", "SA", "A"]
    data = [p for p in packets if bytes(p[TCP].payload)]
    assert [bytes(p[TCP].payload) for p in data] == [b"hello capture"]
    assert sum("F" in f for f in flags) == 2
    assert flags[-1] == "A"
    for p in packets:
        assert p[IP].src == "127.0.0.1" and p[IP].dst == "127.0.0.1"
        assert {p[TCP].sport, p[TCP].dport} == {cport, sport}
        # checksums are valid for the synthetic IP header: scapy recomputes the same
        rebuilt = IP(bytes(p))
        del rebuilt[IP].chksum
        del rebuilt[TCP].chksum
        rebuilt = IP(bytes(rebuilt))
        assert rebuilt[TCP].chksum == p[TCP].chksum
        assert rebuilt[IP].chksum == p[IP].chksum
    # the SYN carries the MSS derived from the MTU (1500 - 20 - 8 - 20)
    assert dict(packets[0][TCP].options)["MSS"] == 1452


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
async def test_tshark_reads_capture(tmp_path: Path) -> None:
    pcap = tmp_path / "conv.pcap"
    await _conversation(pcap)
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-o",
            "tcp.check_checksum:TRUE",
            "-T",
            "fields",
            "-e",
            "tcp.flags.str",
            "-e",
            "tcp.checksum.status",
            "-e",
            "tcp.len",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    rows = [line.split("\t") for line in out if line]
    assert [r[0].replace("·", "").strip() for r in rows[:3]] == ["S", "AS", "A"]
    assert all(r[1] == "1" for r in rows)  # 1 = Good
    assert any(r[2] == "13" for r in rows)
