"""Scenarios 4 and 5: many connections on one endpoint pair.

``idle`` and ``timewait`` measure memory in a child process
(``python -m bench.peer mem``, see :mod:`bench.peer` for the method) so the
numbers are not polluted by this process's history.  The parent runs the
listening endpoint; the child is the connecting (and, for TIME_WAIT, the
actively closing) side and is the one measured.

``multi`` runs 100 bulk connections at once between two endpoints in this
process and reports aggregate throughput and Jain's fairness index.
"""

from __future__ import annotations

import time
from typing import Any

import trio

import utcp

from .common import MB, Child, Sizes, jain, send_then_drain

_PORTS_PER_LISTENER = 25_000  # 4-tuples per (remote, listener port) kept well below 64512


async def _mem_probe(mode: str, n: int, window: float) -> dict[str, Any]:
    async with utcp.open_endpoint(("127.0.0.1", 0)) as server_ep:
        nports = max(1, -(-n // _PORTS_PER_LISTENER))
        listeners = [server_ep.listen(5000 + i, backlog=1024) for i in range(nports)]
        held: list[utcp.Connection] = []
        async with trio.open_nursery() as nursery:

            async def close_on_eof(conn: utcp.Connection) -> None:
                try:
                    while await conn.recv():
                        pass
                finally:
                    await conn.close()

            async def serve(listener: utcp.Listener) -> None:
                while True:
                    conn = await listener.accept()
                    if mode == "idle":
                        held.append(conn)
                    else:
                        nursery.start_soon(close_on_eof, conn)

            for lst in listeners:
                nursery.start_soon(serve, lst)
            host, port = server_ep.local_address
            args = [
                "mem",
                "--mode",
                mode,
                "--target",
                f"{host}:{port}",
                "--ports",
                ",".join(str(lst.port) for lst in listeners),
                "--n",
                str(n),
                "--window",
                str(window),
            ]
            c0 = time.process_time()
            async with Child(args) as child:
                report = await child.read_json()
            parent_cpu = time.process_time() - c0
            for conn in held:
                conn.abort()
            nursery.cancel_scope.cancel()
    report["parent_cpu_seconds_total"] = parent_cpu
    return report


async def idle(sizes: Sizes) -> dict[str, Any]:
    """N idle ESTABLISHED connections: memory per connection and idle CPU, in the child."""
    r = await _mem_probe("idle", sizes.idle_conns, sizes.idle_window)
    established = r["states"].get("ESTABLISHED", 0)
    if established < r["n"] + r["warmup"]:
        raise RuntimeError(f"only {established} connections reached ESTABLISHED: {r['states']}")
    return {
        "kib_per_conn": r["per_conn_bytes"] / 1024,
        "idle_cpu_pct": 100.0 * r["idle_cpu_seconds"] / r["idle_wall_seconds"],
        "post_setup_cpu_pct": 100.0 * r["post_setup_cpu_seconds"] / r["post_setup_wall_seconds"],
        "extra": r,
    }


async def timewait(sizes: Sizes) -> dict[str, Any]:
    """N TIME_WAIT entries (msl=3600) in the child: memory per entry."""
    r = await _mem_probe("timewait", sizes.tw_entries, 0.0)
    tw = r["states"].get("TIME_WAIT", 0)
    if tw < r["n"] + r["warmup"]:
        raise RuntimeError(f"only {tw} connections reached TIME_WAIT: {r['states']}")
    return {
        "kib_per_entry": r["per_conn_bytes"] / 1024,
        "setup_cps": r["n"] / r["setup_seconds"],
        "extra": r,
    }


async def multi(sizes: Sizes) -> dict[str, Any]:
    """N concurrent bulk connections on one endpoint pair, all started together.

    Each connection sends ``multi_bytes_each`` bytes and half-closes; the
    receiver reads to the end and closes.  Per-connection throughput is
    bytes / (its receiver's completion time - the common start); aggregate
    is all bytes / (last completion - start).  Jain's index is computed over
    the per-connection throughputs.
    """
    n = sizes.multi_conns
    each = sizes.multi_bytes_each
    async with (
        utcp.open_endpoint(("127.0.0.1", 0)) as server_ep,
        utcp.open_endpoint(("127.0.0.1", 0)) as client_ep,
    ):
        listener = server_ep.listen(backlog=max(128, n))
        done_at: list[float] = []
        go = trio.Event()
        t0 = 0.0
        async with trio.open_nursery() as nursery:

            async def sink(conn: utcp.Connection) -> None:
                got = 0
                while True:
                    data = await conn.recv(1 << 20)
                    if not data:
                        break
                    got += len(data)
                done_at.append(time.perf_counter())
                await conn.close()
                if got != each:
                    raise RuntimeError(f"a receiver got {got} bytes, expected {each}")

            async def serve() -> None:
                for _ in range(n):
                    nursery.start_soon(sink, await listener.accept())

            async def source(conn: utcp.Connection) -> None:
                await go.wait()
                await send_then_drain(conn, each)
                await conn.close()

            nursery.start_soon(serve)
            conns = []
            for _ in range(n):
                conns.append(await client_ep.connect(server_ep.local_address))
            async with trio.open_nursery() as senders:
                for conn in conns:
                    senders.start_soon(source, conn)
                await trio.sleep(0)
                t0 = time.perf_counter()
                go.set()
        retx = sum(c.info()["total_retransmits"] for c in conns)
        extra_segs = sum(
            max(0, c.info()["segments_out"] - (-(-each // c.info()["snd_mss"]) + 2)) for c in conns
        )
    per = [each / (t - t0) / MB for t in done_at]
    if len(per) != n:
        raise RuntimeError(f"{len(per)} of {n} connections completed")
    return {
        "aggregate_mbps": n * each / (max(done_at) - t0) / MB,
        "jain": jain(per),
        "extra": {
            "per_conn_mbps_min": min(per),
            "per_conn_mbps_max": max(per),
            "total_retransmits": retx,
            "extra_segments": extra_segs,
        },
    }
