"""UDP GSO/GRO batching and its fallbacks: both paths move data correctly."""

from __future__ import annotations

import errno
import hashlib
import random
import socket
from typing import Any

import pytest
import trio

import utcp
from utcp import _udp


async def _transfer(
    offload: bool | None, size: int = 3_000_000
) -> tuple[dict[str, int], dict[str, int], Any]:
    payload = random.Random(7).randbytes(size)
    async with (
        utcp.open_endpoint(("127.0.0.1", 0), offload=offload) as server_ep,
        utcp.open_endpoint(("127.0.0.1", 0), offload=offload) as client_ep,
    ):
        listener = server_ep.listen()
        client = await client_ep.connect(server_ep.local_address)
        server = await listener.accept()
        received = bytearray()

        async def reader() -> None:
            while True:
                chunk = await server.recv(1 << 20)
                if not chunk:
                    return
                received.extend(chunk)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await client.send(payload)
                await client.shutdown()
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        await client.close()
        await server.close()
        return client_ep.counters, server_ep.counters, client_ep


def _kernel_has_gso() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return _udp.gso_supported(s)


async def test_without_offload_one_datagram_per_call() -> None:
    sent, received, ep = await _transfer(False)
    assert not ep._gso and not ep._gro
    assert "OutGsoSends" not in sent and "InGroBatches" not in received
    assert sent["OutSegs"] > 2000


@pytest.mark.skipif(not _kernel_has_gso(), reason="kernel without UDP_SEGMENT")
async def test_with_offload_batches_sends_and_receives() -> None:
    sent, received, ep = await _transfer(None)
    assert ep._gso and ep._gro
    assert sent["OutGsoSends"] > 0
    # fewer send calls than segments: that is the point of GSO
    assert sent["OutGsoSends"] < sent["OutSegs"] / 4
    assert received.get("InGroBatches", 0) > 0


class _NoGsoSocket:
    """Wraps a real socket; its sendmsg fails the way a kernel without GSO does."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sendmsg_calls = 0

    def sendmsg(self, *args: Any) -> int:
        self.sendmsg_calls += 1
        raise OSError(errno.EIO, "Input/output error")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


async def test_gso_error_falls_back_to_plain_sends() -> None:
    async with utcp.open_endpoint(("127.0.0.1", 0)) as ep:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
            sink.bind(("127.0.0.1", 0))
            sink.setblocking(False)
            wrapper = _NoGsoSocket(ep._sock)
            ep._sock = wrapper  # type: ignore[assignment]
            ep._gso = True
            datagrams = [bytes([i]) * 100 for i in range(5)]
            rest = ep._send_many(datagrams, sink.getsockname())
            assert rest == []
            assert wrapper.sendmsg_calls == 1
            assert ep._gso is False and ep.counters["GsoDisabled"] == 1
            got = [sink.recv(2000) for _ in range(5)]
            assert got == datagrams  # every datagram still arrived, in order, unmerged
            ep._sock = wrapper._sock  # type: ignore[assignment]


def test_gro_size_parses_ancillary_data() -> None:
    anc = [
        (
            _udp.SOL_UDP,
            _udp.UDP_GRO,
            (1472).to_bytes(4, "little" if socket.htons(1) != 1 else "big"),
        )
    ]
    assert _udp.gro_size(anc) == 1472
    assert _udp.gro_size([]) == 0
    assert _udp.gro_size([(0, 0, b"\0\0\0\0")]) == 0
