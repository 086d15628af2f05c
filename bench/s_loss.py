"""Scenario 6: bulk transfer through the chaos relay at 0 %, 1 % and 5 % loss.

Topology (one process): client endpoint -> :mod:`utcp.chaos` relay -> server
endpoint.  The relay drops each datagram independently with probability p
in *both* directions (data and ACKs), seeded with the run number so runs
are reproducible.  The 0 % row is the same path with no loss: it shows the
relay's own cost, so the loss rows can be compared with it rather than with
the direct bulk_utcp number.  Reported per loss rate: MB/s and the sender's
``info()["total_retransmits"]``; ``extra`` also has the sender's segments
beyond the minimum (an estimate of retransmissions independent of utcp's
counters) and the relay's drop counts.
"""

from __future__ import annotations

import socket
from typing import Any

import trio

import utcp

from .common import MB, Sizes, Unavailable, send_then_drain

LOSS_RATES = (0.0, 0.01, 0.05)
_round = 0


def _chaos() -> Any:
    try:
        from utcp import chaos, netem
    except ImportError as exc:
        raise Unavailable(f"chaos relay unavailable ({exc})") from None
    if not hasattr(chaos, "open_relay") or not hasattr(netem, "Impairment"):
        raise Unavailable("chaos relay unavailable (no utcp.chaos.open_relay)")
    return chaos, netem


def _enlarge_buffers(relay: Any) -> None:
    """Give the relay's listening socket utcp's 4 MiB buffers.

    The relay leaves its sockets at the system default (~208 KiB), which a
    utcp window burst overflows: without this, even the 0 % row loses
    datagrams in the kernel.  Uses the relay's private ``_sock``; skipped if
    it is not there.  (The per-client upstream sockets only carry ACKs.)
    """
    sock = getattr(relay, "_sock", None)
    if sock is None:
        return
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
        except OSError:
            pass


async def _one(total: int, p: float, seed: int) -> dict[str, Any]:
    chaos, netem = _chaos()
    imp = netem.Impairment(loss=p)
    async with utcp.open_endpoint(("127.0.0.1", 0)) as server_ep:
        listener = server_ep.listen()
        async with chaos.open_relay(
            ("127.0.0.1", 0), server_ep.local_address, c2s=imp, s2c=imp, seed=seed
        ) as relay:
            _enlarge_buffers(relay)
            async with utcp.open_endpoint(("127.0.0.1", 0)) as client_ep:
                got = 0
                async with trio.open_nursery() as nursery:

                    async def serve() -> None:
                        nonlocal got
                        conn = await listener.accept()
                        while True:
                            data = await conn.recv(1 << 20)
                            if not data:
                                break
                            got += len(data)
                        await conn.close()

                    nursery.start_soon(serve)
                    conn = await client_ep.connect(relay.address, listener.port)
                    elapsed = await send_then_drain(conn, total)
                    info = conn.info()
                    conn.abort()  # skip TIME_WAIT
                client_out = client_ep.counters.get("OutSegs", 0)
                client_in = client_ep.counters.get("InSegs", 0)
            stats = relay.stats
        server_out = server_ep.counters.get("OutSegs", 0)
    if got != total:
        raise RuntimeError(f"receiver got {got} bytes, expected {total}")
    minimum = -(-total // info["snd_mss"]) + 2
    return {
        "mbps": total / elapsed / MB,
        "retx": info["total_retransmits"],
        "extra_segments": max(0, info["segments_out"] - minimum),
        "relay_dropped_c2s": stats.c2s.dropped_loss,
        "relay_dropped_s2c": stats.s2c.dropped_loss,
        "relay": stats.summary(),
        # datagrams lost outside the relay's impairment (socket buffer overflow)
        "kernel_drops_c2s": client_out - stats.c2s.submitted,
        "kernel_drops_s2c": max(0, server_out - stats.s2c.submitted)
        + max(0, stats.s2c.delivered - client_in),
    }


async def loss(sizes: Sizes) -> dict[str, Any]:
    global _round
    _round += 1
    out: dict[str, Any] = {"extra": {}}
    for p in LOSS_RATES:
        tag = f"loss{round(p * 100)}"
        r = await _one(sizes.loss_bytes, p, seed=_round)
        out[f"{tag}_mbps"] = r.pop("mbps")
        out[f"{tag}_retx"] = r.pop("retx")
        out["extra"][tag] = r
    return out
