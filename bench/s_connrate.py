"""Scenario 3: connection setup + teardown rate, utcp vs kernel TCP.

One connection's life, the same for both stacks: the client connects, the
server accepts and closes at once, the client reads end-of-stream and
closes.  It counts as done when the client's ``close()`` returns (both
closes are non-blocking; the final FIN/ACK exchange finishes in the
background, in the kernel or in utcp's connection task).  *Sequential* runs
one connection after another; *concurrent* keeps 50 of them in flight (50
client tasks, each running connections back to back) until the total is
reached.  Result: connections per second.

TIME_WAIT: the server closes first, so its end enters TIME_WAIT.  For utcp
the server endpoint uses ``msl=0.01`` (TIME_WAIT = 2*msl = 20 ms), so entries
expire during the run and the cost of expiring them is part of the timing;
the client endpoint keeps the default msl, which is irrelevant (its end goes
through LAST_ACK, not TIME_WAIT).  Kernel TCP keeps its 60 s TIME_WAIT, held
by the kernel outside the measurement.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import utcp

from .common import Sizes


async def _rate(once: Callable[[], Awaitable[None]], total: int, concurrency: int) -> float:
    """Connections per second for ``total`` calls of ``once`` with ``concurrency`` in flight."""
    remaining = total
    t0 = time.perf_counter()
    if concurrency <= 1:
        for _ in range(total):
            await once()
    else:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await once()

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
    return total / (time.perf_counter() - t0)


async def connrate_utcp(sizes: Sizes) -> dict[str, Any]:
    async with (
        utcp.open_endpoint(("127.0.0.1", 0), msl=0.01) as server_ep,
        utcp.open_endpoint(("127.0.0.1", 0)) as client_ep,
    ):
        listener = server_ep.listen(backlog=256)
        addr = server_ep.local_address
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                while True:
                    conn = await listener.accept()
                    await conn.close()

            nursery.start_soon(serve)

            async def once() -> None:
                conn = await client_ep.connect(addr)
                if await conn.recv() != b"":
                    raise RuntimeError("expected end of stream")
                await conn.close()

            seq = await _rate(once, sizes.conn_seq, 1)
            conc = await _rate(once, sizes.conn_concurrent_total, sizes.conn_concurrency)
            nursery.cancel_scope.cancel()
    return {
        "seq_cps": seq,
        "conc_cps": conc,
        "notes": "utcp server msl=0.01: server-side TIME_WAIT lasts 20 ms and expires in-run",
    }


async def connrate_tcp(sizes: Sizes) -> dict[str, Any]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=256)
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:

        async def handler(stream: trio.SocketStream) -> None:
            await stream.aclose()

        nursery.start_soon(trio.serve_listeners, handler, listeners)

        async def once() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            if await stream.receive_some() != b"":
                raise RuntimeError("expected end of stream")
            await stream.aclose()

        seq = await _rate(once, sizes.conn_seq, 1)
        conc = await _rate(once, sizes.conn_concurrent_total, sizes.conn_concurrency)
        nursery.cancel_scope.cancel()
    return {
        "seq_cps": seq,
        "conc_cps": conc,
        "notes": "kernel TIME_WAIT (60 s, server side) is held by the kernel, not timed",
    }
