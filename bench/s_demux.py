"""Scenario 7: demultiplexing cost, measured on the sans-IO core (no sockets, no Trio).

Two :class:`utcp._core.endpoint.EndpointCore` objects are wired back to back
in memory to establish N connections (SYN, SYN-ACK, ACK passed by hand),
once with N = 10 and once with N = 10,000.  Then one connection in the
middle of each table is fed pre-encoded datagrams through
``EndpointCore.receive(datagram, addr, now)``:

* ``ack``: the handshake's final ACK replayed over and over, i.e. a
  duplicate pure ACK (decode + checksum, 4-tuple lookup, sequence/ACK/window
  checks, nothing to send);
* ``data``: in-order 64-byte data segments produced by the client
  connection itself (nodelay), so they carry the negotiated options (adds
  queueing the payload and an ACK every second full-sized worth of data, as
  the real receiver does).  Between sub-batches, outside the timed region,
  the receive queue is drained and the server's ACKs are fed back to the
  client so its window keeps opening.

Segments are timed in batches of 1,000 with ``time.perf_counter``; the two
table sizes are measured alternately, batch by batch, so drift affects both
alike; the result is the median batch, in microseconds per segment.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from typing import Any

from utcp._core.config import Options
from utcp._core.connection import TcpConnection
from utcp._core.endpoint import EndpointCore
from utcp._core.state import State

from .common import Sizes

_SERVER = ("10.0.0.1", 4000)
_CLIENT = ("10.0.0.2", 5000)
_PORT = 80
_BATCH = 1000
_NOW = 1000.0


class _Table:
    """A server core holding ``n`` established connections, and one target among them."""

    def __init__(self, n: int, deadline: float) -> None:
        opts = Options()
        self.server = EndpointCore(opts, secret=b"s" * 32, rng=random.Random(1))
        client_opts = opts.replace(ephemeral_ports=(1024, 65535), nodelay=True)
        self.client = EndpointCore(client_opts, secret=b"c" * 32, rng=random.Random(2))
        listener = self.server.listen(_PORT, opts)
        target = n // 2
        for i in range(n):
            if i % 256 == 0 and time.perf_counter() > deadline:
                raise TimeoutError(f"demux: building {n} connections took too long")
            c = self.client.connect(_SERVER, _PORT, client_opts, _NOW)
            s: TcpConnection | None = None
            for d in c.take_datagrams():
                s = self.server.receive(d, _CLIENT, _NOW)
            assert s is not None
            for d in s.take_datagrams():
                self.client.receive(d, _SERVER, _NOW)
            final_ack = c.take_datagrams()
            for d in final_ack:
                self.server.receive(d, _CLIENT, _NOW)
            if s.state is not State.ESTABLISHED or c.state is not State.ESTABLISHED:
                raise RuntimeError(f"handshake {i} ended in {s.state}/{c.state}")
            # what Listener.accept() does: take it off the accept queue
            listener.accept_queue.clear()
            self.server.owner.pop(s, None)
            if i == target:
                self.client_conn, self.conn = c, s
                # the handshake's final ACK, replayed: a duplicate pure ACK
                self.ack = final_ack[-1]
        self.server.new_connections.clear()
        self.server.accept_ready.clear()
        self.n = len(self.server.connections)
        self.payload = b"d" * 64

    def data_round(self, want: int) -> list[bytes]:
        """Up to ``want`` 64-byte data segments, made by the client connection itself.

        The client (nodelay) emits one segment per ``send`` while its window
        allows; so the segments carry whatever options the connection
        negotiated (timestamps...), exactly like real traffic.
        """
        c = self.client_conn
        out = c.take_datagrams()
        while len(out) < want:
            c.send(self.payload, _NOW)
            got = c.take_datagrams()
            if not got:
                break
            out.extend(got)
        return out

    def reset(self) -> None:
        """Drain the target's receive queue, hand its ACKs to the client (outside the timing)."""
        self.conn.read(1 << 30, _NOW)
        for d in self.conn.take_datagrams():
            self.client.receive(d, _SERVER, _NOW)
        self.server.outbox.clear()


def _time(receive: Any, datagrams: list[bytes]) -> float:
    clock = time.perf_counter
    t = clock()
    for d in datagrams:
        receive(d, _CLIENT, _NOW)
    return clock() - t


def _time_batch(t: _Table, kind: str) -> float:
    """Seconds per segment over one batch of ``_BATCH`` segments of ``kind``."""
    if kind == "ack":
        elapsed = _time(t.server.receive, [t.ack] * _BATCH)
        t.reset()
        return elapsed / _BATCH
    done = 0
    elapsed = 0.0
    while done < _BATCH:
        dgrams = t.data_round(_BATCH - done)
        if not dgrams:
            raise RuntimeError("demux: the client connection stopped sending")
        elapsed += _time(t.server.receive, dgrams)
        done += len(dgrams)
        t.reset()
    return elapsed / done


async def demux(sizes: Sizes) -> dict[str, Any]:
    budget = 60.0 * max(sizes.timeout_scale, 0.5)
    deadline = time.perf_counter() + budget
    t_build = time.perf_counter()
    small = _Table(sizes.demux_small, deadline)
    large = _Table(sizes.demux_large, deadline)
    build_seconds = time.perf_counter() - t_build
    gc.collect()
    results: dict[str, dict[int, list[float]]] = {"ack": {}, "data": {}}
    batches = max(3, sizes.demux_segments // _BATCH)
    for kind in ("ack", "data"):
        per = results[kind]
        per[small.n] = []
        per[large.n] = []
        for b in range(batches + 1):  # batch 0 is a warm-up
            if time.perf_counter() > deadline:
                raise TimeoutError("demux: timing took too long")
            for t in (small, large) if b % 2 == 0 else (large, small):
                us = _time_batch(t, kind) * 1e6
                if b:
                    per[t.n].append(us)
    out: dict[str, Any] = {}
    for kind in ("ack", "data"):
        s = statistics.median(results[kind][small.n])
        big = statistics.median(results[kind][large.n])
        out[f"{kind}_us_small"] = s
        out[f"{kind}_us_large"] = big
    out["extra"] = {
        "connections_small": small.n,
        "connections_large": large.n,
        "batch": _BATCH,
        "batches": batches,
        "build_seconds": build_seconds,
        "target_bytes_received": large.conn.bytes_received,
    }
    return out
