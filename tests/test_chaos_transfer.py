"""Bulk transfers over real UDP on loopback, through the impairing relay.

Topology: client endpoint -> :func:`utcp.chaos.open_relay` -> server
endpoint, all in this process, in real time (the relay's netem model
drops, duplicates and reorders; the kernel carries the datagrams).  These
tests complement the deterministic simulator (test_sim.py): same core, but
the Trio driver, real sockets and real timers.

* 10 MB each way at 5 % loss (both directions) with 2 % duplication and 5 %
  reordering, SHA-256 verified on both sides.  This is the slow one: about
  100-120 s of wall time on a 2-core machine, of which only about 6 s is
  CPU.  The time goes to retransmission timeouts (mostly with a few
  segments in flight, where three duplicate ACKs never come, each costing
  at least ``rto_min`` = 200 ms on a 4 ms path); the simulator predicts the
  same (86-100 virtual seconds for seeds 1-3 of this impairment).  It is
  bounded at 240 s.
* A 3-second blackout of both directions in the middle of a transfer
  (about 7 s).

Every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

import trio

import utcp
from utcp.chaos import ChaosRelay, open_relay
from utcp.netem import Impairment

MB = 1_000_000
CHUNK = 64 * 1024


@dataclass
class Side:
    """What one application sent and received."""

    sent_digest: str = ""
    received: Any = field(default_factory=hashlib.sha256)
    received_bytes: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    done_at: float = 0.0


def data_for(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def pump(conn: utcp.Connection, data: bytes, side: Side) -> None:
    """Send ``data`` then EOF, while receiving until the peer's EOF."""
    side.sent_digest = hashlib.sha256(data).hexdigest()

    async def sender() -> None:
        view = memoryview(data)
        for off in range(0, len(view), CHUNK):
            await conn.send_all(view[off : off + CHUNK])
        await conn.send_eof()

    async def receiver() -> None:
        while True:
            chunk = await conn.receive_some(CHUNK)
            if not chunk:
                break
            side.received.update(chunk)
            side.received_bytes += len(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        nursery.start_soon(receiver)
    side.info = conn.info()
    side.done_at = trio.current_time()
    await conn.aclose()


async def transfer(
    c2s: Impairment,
    s2c: Impairment,
    *,
    client_bytes: int,
    server_bytes: int,
    seed: int,
    limit: float,
) -> tuple[Side, Side, ChaosRelay, float]:
    """Run one transfer through a relay; returns both sides, the relay and the time taken."""
    client_data = data_for(seed, client_bytes)
    server_data = data_for(seed + 1, server_bytes)
    client, server = Side(), Side()
    start = time.monotonic()
    with trio.fail_after(limit):
        async with utcp.open_endpoint(("127.0.0.1", 0)) as server_ep:
            listener = server_ep.listen(80)
            async with open_relay(
                ("127.0.0.1", 0), server_ep.local_address, c2s=c2s, s2c=s2c, seed=seed
            ) as relay:
                async with utcp.open_endpoint(("127.0.0.1", 0)) as client_ep:
                    async with trio.open_nursery() as nursery:

                        async def serve() -> None:
                            conn = await listener.accept()
                            await pump(conn, server_data, server)

                        nursery.start_soon(serve)
                        conn = await client_ep.connect(relay.address, 80)
                        await pump(conn, client_data, client)
    elapsed = time.monotonic() - start
    assert client.received.hexdigest() == hashlib.sha256(server_data).hexdigest()
    assert server.received.hexdigest() == hashlib.sha256(client_data).hexdigest()
    assert client.received_bytes == server_bytes and server.received_bytes == client_bytes
    return client, server, relay, elapsed


async def test_10mb_each_way_at_5_percent_loss_with_reordering_and_duplication() -> None:
    imp = Impairment(loss=0.05, duplicate=0.02, reorder=0.05, reorder_delay=0.005, delay=0.002)
    client, server, relay, elapsed = await transfer(
        imp, imp, client_bytes=10 * MB, server_bytes=10 * MB, seed=1, limit=240
    )
    stats = relay.stats
    for link in (stats.c2s, stats.s2c):
        assert link.dropped_loss > 0 and link.duplicated > 0 and link.reordered > 0
    assert client.info["bytes_retransmitted"] > 0 and server.info["bytes_retransmitted"] > 0
    print(
        f"\n10 MB each way at 5 % loss: {elapsed:.1f} s, "
        f"{2 * 10 * MB / elapsed / 1e6:.2f} MB/s total; {stats.summary()}; "
        f"retransmitted {client.info['bytes_retransmitted']} + "
        f"{server.info['bytes_retransmitted']} bytes"
    )


async def test_3_second_blackout_mid_transfer_is_survived() -> None:
    # The relay drops everything, both ways, from 1 s to 4 s after it started:
    # the transfer (about 3 s without the blackout, rate-limited to 1 MB/s)
    # is in full flight.  Data flows client -> server only (see test_sim.py's
    # both-ways blackout for what happens when both sides send).
    imp = Impairment(delay=0.002, rate=1_000_000, queue_limit=128 * 1024, blackouts=[(1.0, 3.0)])
    client, server, relay, elapsed = await transfer(
        imp, imp, client_bytes=3 * MB, server_bytes=0, seed=2, limit=50
    )
    stats = relay.stats
    assert stats.c2s.dropped_blackout > 0 and stats.s2c.dropped_blackout > 0
    assert client.info["bytes_retransmitted"] > 0
    assert elapsed > 4.0
    print(f"\n3 MB with a 3 s blackout: {elapsed:.1f} s; {stats.summary()}")
