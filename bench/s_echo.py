"""Scenario 2: 1-byte echo round trips, utcp vs kernel TCP, both in this process.

The client sends one byte and waits for the echoed byte; each round trip is
timed with ``time.perf_counter``; 50 warm-up trips are not counted.  Both
stacks have Nagle off: utcp with ``nodelay=True`` on both endpoints, kernel
TCP through :class:`trio.SocketStream`, which sets TCP_NODELAY itself.
"""

from __future__ import annotations

import time
from typing import Any

import trio

import utcp

from .common import percentile

_WARMUP = 50


def _summary(rtts: list[float]) -> dict[str, Any]:
    return {
        "p50_us": percentile(rtts, 50) * 1e6,
        "p99_us": percentile(rtts, 99) * 1e6,
        "extra": {"mean_us": sum(rtts) / len(rtts) * 1e6, "trips": len(rtts)},
    }


async def _trips(send: Any, recv: Any, n: int) -> list[float]:
    rtts: list[float] = []
    clock = time.perf_counter
    for i in range(n + _WARMUP):
        t = clock()
        await send(b"x")
        if await recv(1) != b"x":
            raise RuntimeError("echo returned the wrong byte")
        if i >= _WARMUP:
            rtts.append(clock() - t)
    return rtts


async def echo_utcp(sizes: Any) -> dict[str, Any]:
    async with (
        utcp.open_endpoint(("127.0.0.1", 0), nodelay=True) as server_ep,
        utcp.open_endpoint(("127.0.0.1", 0), nodelay=True) as client_ep,
    ):
        listener = server_ep.listen()
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                conn = await listener.accept()
                while True:
                    data = await conn.recv(1)
                    if not data:
                        break
                    await conn.send(data)
                await conn.close()

            nursery.start_soon(serve)
            conn = await client_ep.connect(server_ep.local_address)
            rtts = await _trips(conn.send, conn.recv, sizes.echo_trips)
            await conn.shutdown()
            while await conn.recv():
                pass
            await conn.close()
    return _summary(rtts)


async def echo_tcp(sizes: Any) -> dict[str, Any]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            async with listeners[0]:
                stream = await listeners[0].accept()
            async with stream:
                while True:
                    data = await stream.receive_some(1)
                    if not data:
                        break
                    await stream.send_all(data)

        nursery.start_soon(serve)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            rtts = await _trips(stream.send_all, stream.receive_some, sizes.echo_trips)
            await stream.send_eof()
            while await stream.receive_some():
                pass
    return _summary(rtts)
