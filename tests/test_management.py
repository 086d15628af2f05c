"""Connection management as Linux does it, seen through the Trio API.

Real UDP sockets on 127.0.0.1; protocol timers run in virtual time under
``trio.testing.MockClock(autojump_threshold=0.02)`` (the ``vclock`` fixture):
the clock jumps only after 20 ms of real idleness, never while a datagram
is on its way through the kernel.  Helpers:

* :class:`RawPeer` speaks hand-built segments (``utcp._core.codec``) from a
  plain Trio UDP socket and records what it receives, with virtual times;
* :class:`Relay` forwards between a client and a server endpoint and can
  drop datagrams in either direction (a peer that goes silent).

The sans-IO counterparts of these tests are in ``test_endpoint_core.py``.
"""

from __future__ import annotations

import errno
import math
import random
import socket
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import utcp
from utcp import State
from utcp._core.codec import ACK, RST, SYN, Segment, decode, encode
from utcp._core.connection import TcpConnection
from utcp._core.seq import MASK
from utcp._core.timewait import TimeWait

HOST = "127.0.0.1"
MSS = 1452


@pytest.fixture
def vclock() -> trio.testing.MockClock:
    """Virtual time that jumps only after 20 ms of real idleness."""
    return trio.testing.MockClock(autojump_threshold=0.02)


def seqadd(a: int, b: int) -> int:
    return (a + b) & MASK


@asynccontextmanager
async def endpoints(
    server_opts: dict[str, Any] | None = None, **client_opts: Any
) -> AsyncIterator[tuple[utcp.Endpoint, utcp.Endpoint]]:
    """A server and a client endpoint on loopback (the client's closes first)."""
    async with (
        utcp.open_endpoint((HOST, 0), **(server_opts or {})) as server_ep,
        utcp.open_endpoint((HOST, 0), **client_opts) as client_ep,
    ):
        yield server_ep, client_ep


async def echo_once(client: utcp.Connection, server: utcp.Connection, data: bytes) -> None:
    await client.send(data)
    got = b""
    while len(got) < len(data):
        got += await server.recv()
    await server.send(got.upper())
    back = b""
    while len(back) < len(data):
        back += await client.recv()
    assert back == data.upper()


async def settle() -> None:
    """Let every datagram in flight arrive and be processed (no virtual time passes)."""
    for _ in range(3):
        await trio.sleep(0.001)


# ----------------------------------------------------------------------
# Raw peers and a dropping relay


class RawPeer:
    """A plain UDP socket that sends hand-built segments and records replies."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.address: tuple[str, int] = sock.getsockname()[:2]
        #: (virtual arrival time, sender address, segment)
        self.received: list[tuple[float, tuple[str, int], Segment]] = []
        self._lot = trio.lowlevel.ParkingLot()

    async def send(self, seg: Segment, to: tuple[str, int]) -> None:
        await self.sock.sendto(encode(seg), to)

    async def _reader(self) -> None:
        while True:
            data, addr = await self.sock.recvfrom(65536)
            self.received.append((trio.current_time(), addr[:2], decode(data)))
            self._lot.unpark_all()

    def segments(self, port: int | None = None, since: float = -math.inf) -> list[Segment]:
        return [
            s for t, _a, s in self.received if t >= since and (port is None or s.dst_port == port)
        ]

    async def wait_for(self, count: int, port: int | None = None, timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            while len(self.segments(port)) < count:
                await self._lot.park()

    async def handshake(
        self, to: tuple[str, int], port: int, local_port: int, isn: int = 0x7FFFFF00
    ) -> tuple[int, int]:
        """Open a connection by hand; returns (next seq to send, next seq expected)."""
        await self.send(Segment(local_port, port, isn, 0, SYN, 8192, mss=MSS), to)
        await self.wait_for(1, local_port)
        synack = self.segments(local_port)[-1]
        assert synack.flags == SYN | ACK
        snd, rcv = seqadd(isn, 1), seqadd(synack.seq, 1)
        await self.send(Segment(local_port, port, snd, rcv, ACK, 8192), to)
        return snd, rcv


@asynccontextmanager
async def raw_peer(bind: tuple[str, int] = (HOST, 0)) -> AsyncIterator[RawPeer]:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(bind)
        peer = RawPeer(sock)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer._reader)
            yield peer
            nursery.cancel_scope.cancel()


class Relay:
    """Forwards client <-> server; ``drop(direction, segment)`` loses datagrams."""

    def __init__(self, front: trio.socket.SocketType, back: trio.socket.SocketType) -> None:
        self.front = front
        self.back = back
        self.address: tuple[str, int] = front.getsockname()[:2]
        self.client: tuple[str, int] | None = None
        self.drop: Callable[[str, Segment], bool] = lambda direction, seg: False
        self.dropped: list[tuple[float, str, Segment]] = []

    def _lose(self, direction: str, data: bytes) -> bool:
        seg = decode(data)
        if self.drop(direction, seg):
            self.dropped.append((trio.current_time(), direction, seg))
            return True
        return False

    async def _c2s(self) -> None:
        while True:
            data, addr = await self.front.recvfrom(65536)
            self.client = addr[:2]
            if not self._lose("c2s", data):
                await self.back.send(data)

    async def _s2c(self) -> None:
        while True:
            data = await self.back.recv(65536)
            if self.client is not None and not self._lose("s2c", data):
                await self.front.sendto(data, self.client)


@asynccontextmanager
async def relay_to(server: tuple[str, int]) -> AsyncIterator[Relay]:
    front = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with front, back:
        await front.bind((HOST, 0))
        await back.bind((HOST, 0))
        await back.connect(server)
        relay = Relay(front, back)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay._c2s)
            nursery.start_soon(relay._s2c)
            yield relay
            nursery.cancel_scope.cancel()


def tw_records(ep: utcp.Endpoint) -> dict[Any, Any]:
    """The endpoint's compact TIME_WAIT table (internal)."""
    return ep._core.time_wait


def rows(ep: utcp.Endpoint, state: State | None = None) -> list[utcp.ConnectionInfo]:
    return [r for r in ep.connections() if state is None or r.state is state]


# ----------------------------------------------------------------------
# Accept queue overflow


async def connect_two(
    client_ep: utcp.Endpoint, address: tuple[str, int]
) -> list[utcp.Connection | BaseException]:
    """Two concurrent connects: both SYNs reach the SYN queue before either ACK."""
    results: list[utcp.Connection | BaseException] = []

    async def one() -> None:
        try:
            results.append(await client_ep.connect(address))
        except OSError as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
    return results


async def test_accept_queue_full_drop_then_complete_after_accept(
    vclock: trio.testing.MockClock,
) -> None:
    async with endpoints() as (server_ep, client_ep):
        listener = server_ep.listen(backlog=1)
        t0 = trio.current_time()
        c1, c2 = await connect_two(client_ep, server_ep.local_address)
        assert isinstance(c1, utcp.Connection) and isinstance(c2, utcp.Connection)
        # Both clients are ESTABLISHED; one final ACK was ignored by the server.
        assert c1.state is State.ESTABLISHED and c2.state is State.ESTABLISHED
        await settle()
        assert server_ep.counters["ListenOverflows"] == 1
        assert server_ep.counters["ListenDrops"] == 1
        assert server_ep.state_counts() == {"LISTEN": 1, "ESTABLISHED": 1, "SYN_RECEIVED": 1}
        [half] = rows(server_ep, State.SYN_RECEIVED)
        assert half.timer == pytest.approx(t0 + 1.0, abs=0.05)  # SYN-ACK retransmission
        # The server retransmits its SYN-ACK after 1 s; the client re-ACKs; still full.
        await trio.sleep_until(t0 + 2.0)
        assert server_ep.counters["ListenOverflows"] == 2
        [again] = rows(server_ep, State.SYN_RECEIVED)
        assert again.remote_port == half.remote_port
        assert again.timer == pytest.approx(t0 + 3.0, abs=0.05)  # backed off
        assert c1.state is State.ESTABLISHED and c2.state is State.ESTABLISHED
        # The application accepts; the next SYN-ACK (at 1 + 2 s) completes the other.
        first = await listener.accept()
        assert trio.current_time() - t0 < 2.1
        second = await listener.accept()
        assert trio.current_time() - t0 == pytest.approx(3.0, abs=0.1)
        assert {first.remote_port, second.remote_port} == {c1.local_port, c2.local_port}
        assert server_ep.counters["ListenOverflows"] == 2
        by_port = {c1.local_port: c1, c2.local_port: c2}
        for srv in (first, second):
            await echo_once(by_port[srv.remote_port], srv, b"hello from the queue")


async def test_accept_queue_full_reset(vclock: trio.testing.MockClock) -> None:
    async with endpoints() as (server_ep, client_ep):
        listener = server_ep.listen(backlog=1, accept_overflow="reset")
        results = await connect_two(client_ep, server_ep.local_address)
        await settle()
        assert server_ep.counters["ListenOverflows"] == 1
        assert server_ep.counters["ListenDrops"] == 1
        # One connection works, the other was reset: its first use says so.
        outcomes: list[type[BaseException] | None] = []
        for r in results:
            if isinstance(r, BaseException):
                outcomes.append(type(r))
                continue
            try:
                await r.send(b"hello")
                outcomes.append(None)
            except ConnectionResetError:
                outcomes.append(ConnectionResetError)
        assert sorted(outcomes, key=repr) == sorted([None, ConnectionResetError], key=repr)
        good = next(r for r, o in zip(results, outcomes, strict=True) if o is None)
        assert isinstance(good, utcp.Connection)
        srv = await listener.accept()
        assert srv.remote_port == good.local_port
        assert await srv.recv() == b"hello"
        bad = next(r for r, o in zip(results, outcomes, strict=True) if o is not None)
        if isinstance(bad, utcp.Connection):
            with pytest.raises(ConnectionResetError):
                await bad.recv()
            with pytest.raises(trio.BrokenResourceError) as exc_info:
                await bad.receive_some()
            assert isinstance(exc_info.value.__cause__, ConnectionResetError)
        assert server_ep.state_counts() == {"LISTEN": 1, "ESTABLISHED": 1}


# ----------------------------------------------------------------------
# SYN queue overflow and SYN cookies


async def test_syn_queue_full_auto_cookies(vclock: trio.testing.MockClock) -> None:
    async with endpoints({"syn_backlog": 1}) as (server_ep, client_ep), raw_peer() as raw:
        listener = server_ep.listen()
        # A half-open connection that never completes fills the SYN queue.
        await raw.send(
            Segment(7000, server_ep.local_address[1], 1, 0, SYN, 8192), server_ep.local_address
        )
        await raw.wait_for(1)
        assert server_ep.state_counts() == {"LISTEN": 1, "SYN_RECEIVED": 1}
        conn = await client_ep.connect(server_ep.local_address)
        srv = await listener.accept()
        c = server_ep.counters
        assert c["SyncookiesSent"] == 1 and c["SyncookiesRecv"] == 1
        assert "SyncookiesFailed" not in c
        # The cookie connection never sat in the SYN queue, and has no options a
        # cookie cannot carry.
        assert server_ep.state_counts() == {"LISTEN": 1, "SYN_RECEIVED": 1, "ESTABLISHED": 1}
        for info in (conn.info(), srv.info()):
            assert not info["timestamps"] and not info["sack"] and info["snd_wscale"] == 0
        await echo_once(conn, srv, b"cookie monster" * 500)


async def test_syncookies_always(vclock: trio.testing.MockClock) -> None:
    async with endpoints({"syncookies": "always"}) as (server_ep, client_ep):
        listener = server_ep.listen()
        conn = await client_ep.connect(server_ep.local_address)
        srv = await listener.accept()
        assert server_ep.counters["SyncookiesSent"] == 1
        assert server_ep.counters["SyncookiesRecv"] == 1
        await echo_once(conn, srv, b"always")


async def test_forged_and_stale_cookies_get_rst(vclock: trio.testing.MockClock) -> None:
    async with utcp.open_endpoint((HOST, 0), syncookies="always") as server_ep, raw_peer() as raw:
        listener = server_ep.listen()
        addr = server_ep.local_address
        port = addr[1]
        for sport, isn in ((8000, 100), (8001, 200)):
            await raw.send(Segment(sport, port, isn, 0, SYN, 8192, mss=MSS), addr)
        await raw.wait_for(2)
        cookie = {s.dst_port: s.seq for s in raw.segments()}
        assert not rows(server_ep, State.SYN_RECEIVED)  # no state kept
        # Forged: the wrong ACK number.
        await raw.send(Segment(8000, port, 101, seqadd(cookie[8000], 7), ACK, 8192), addr)
        await raw.wait_for(2, 8000)
        rst = raw.segments(8000)[-1]
        assert rst.flags == RST and rst.seq == seqadd(cookie[8000], 7)
        assert server_ep.counters["SyncookiesFailed"] == 1
        # Stale: the right ACK, three 64 s slots too late.
        await trio.sleep(3 * 64.0 + 1)
        await raw.send(Segment(8001, port, 201, seqadd(cookie[8001], 1), ACK, 8192), addr)
        await raw.wait_for(2, 8001)
        assert raw.segments(8001)[-1].flags == RST
        assert server_ep.counters["SyncookiesFailed"] == 2
        assert "SyncookiesRecv" not in server_ep.counters
        assert server_ep.state_counts() == {"LISTEN": 1}
        # A fresh one works.
        await raw.send(Segment(8002, port, 300, 0, SYN, 8192, mss=MSS), addr)
        await raw.wait_for(1, 8002)
        fresh = raw.segments(8002)[0].seq
        await raw.send(Segment(8002, port, 301, seqadd(fresh, 1), ACK, 8192, b"hi"), addr)
        srv = await listener.accept()
        assert await srv.recv() == b"hi"
        assert server_ep.counters["SyncookiesRecv"] == 1


async def test_syncookies_never_drops_syns_and_the_client_backs_off(
    vclock: trio.testing.MockClock,
) -> None:
    opts = {"syn_backlog": 1, "syncookies": "never"}
    async with endpoints(opts) as (server_ep, client_ep), raw_peer() as raw:
        listener = server_ep.listen()
        addr = server_ep.local_address
        await raw.send(Segment(7000, addr[1], 1, 0, SYN, 8192), addr)
        await raw.wait_for(1)
        t0 = trio.current_time()
        result: list[utcp.Connection] = []

        async def connect() -> None:
            result.append(await client_ep.connect(addr))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(connect)
            # Each SYN is dropped silently; the client retries 1, 2, 4, 8, 16 s apart.
            for n, t in enumerate([0.0, 1.0, 3.0, 7.0, 15.0, 31.0], start=1):
                await trio.sleep_until(t0 + t + 0.5)
                assert server_ep.counters["TCPReqQFullDrop"] == n
                assert not result
            # The half-open connection gives up after its SYN-ACK retries (63 s);
            # the client's 7th SYN, 63 s after the first, gets in.
        [conn] = result
        assert trio.current_time() - t0 == pytest.approx(63.0, abs=0.2)
        assert "SyncookiesSent" not in server_ep.counters
        assert server_ep.counters["ListenDrops"] == 6
        srv = await listener.accept()
        await echo_once(conn, srv, b"finally")


# ----------------------------------------------------------------------
# SYN and SYN-ACK retries


@pytest.mark.parametrize(("retries", "give_up"), [(2, 7.0), (4, 31.0)])
async def test_syn_retries_then_timeout_error(
    vclock: trio.testing.MockClock, retries: int, give_up: float
) -> None:
    async with raw_peer() as hole, utcp.open_endpoint((HOST, 0)) as ep:
        t0 = trio.current_time()
        with pytest.raises(TimeoutError, match="timed out"):
            await ep.connect(hole.address, syn_retries=retries)
        assert trio.current_time() - t0 == pytest.approx(give_up, abs=0.05)
        times = [round(t - t0, 1) for t, _a, s in hole.received if s.flags == SYN]
        assert times == [0.0, 1.0, 3.0, 7.0, 15.0][: retries + 1]
        await trio.testing.wait_all_tasks_blocked()
        assert ep.connections() == []


async def test_synack_retries_then_forgotten(vclock: trio.testing.MockClock) -> None:
    async with utcp.open_endpoint((HOST, 0), synack_retries=2) as ep, raw_peer() as raw:
        ep.listen()
        addr = ep.local_address
        await raw.send(Segment(9000, addr[1], 42, 0, SYN, 8192, mss=MSS), addr)
        await raw.wait_for(1)
        t0 = raw.received[0][0]
        assert ep.state_counts() == {"LISTEN": 1, "SYN_RECEIVED": 1}
        await trio.sleep_until(t0 + 6.9)
        assert ep.state_counts() == {"LISTEN": 1, "SYN_RECEIVED": 1}
        await trio.sleep_until(t0 + 7.1)
        assert ep.state_counts() == {"LISTEN": 1}
        await trio.sleep(60)
        times = [round(t - t0, 1) for t, _a, _s in raw.received]
        assert times == [0.0, 1.0, 3.0]  # then silence: no RST
        assert {s.flags for s in raw.segments()} == {SYN | ACK}


# ----------------------------------------------------------------------
# TIME_WAIT


async def open_and_close(
    server_ep: utcp.Endpoint,
    client_ep: utcp.Endpoint,
    listener: utcp.Listener,
    *,
    server_first: bool = False,
) -> tuple[utcp.Connection, utcp.Connection]:
    """Connect, exchange a little, close both ways; returns (client, server)."""
    client = await client_ep.connect(server_ep.local_address, listener.port)
    server = await listener.accept()
    await echo_once(client, server, b"ping")
    first, second = (server, client) if server_first else (client, server)
    await first.close()
    assert await second.recv() == b""
    await second.close()
    await second.wait_closed()
    await settle()
    return client, server


@pytest.mark.parametrize("msl", [2.0, 10.0])
async def test_time_wait_lasts_two_msl(vclock: trio.testing.MockClock, msl: float) -> None:
    async with endpoints(msl=msl) as (server_ep, client_ep):
        listener = server_ep.listen()
        t_close = trio.current_time()
        client, server = await open_and_close(server_ep, client_ep, listener)
        assert server.state is State.CLOSED
        assert client.state is State.TIME_WAIT
        [row] = client_ep.connections()
        assert row.state is State.TIME_WAIT
        assert (row.local_port, row.remote_port) == (client.local_port, listener.port)
        assert row.remote_address == server_ep.local_address
        assert row.timer == pytest.approx(t_close + 2 * msl, abs=0.05)
        assert client_ep.state_counts() == {"TIME_WAIT": 1}
        # The record is the compact TimeWait, not a TcpConnection.
        [record] = tw_records(client_ep).values()
        assert type(record) is TimeWait and not isinstance(record, TcpConnection)
        assert record.deadline == row.timer
        await trio.sleep_until(row.timer - 0.1)
        assert [r.state for r in client_ep.connections()] == [State.TIME_WAIT]
        await client.wait_closed()
        assert trio.current_time() == pytest.approx(row.timer, abs=0.05)
        assert client.state is State.CLOSED
        assert client_ep.connections() == [] and client_ep.state_counts() == {}


async def test_max_tw_buckets(vclock: trio.testing.MockClock) -> None:
    async with endpoints(max_tw_buckets=2) as (server_ep, client_ep):
        listener = server_ep.listen()
        clients = [(await open_and_close(server_ep, client_ep, listener))[0] for _ in range(3)]
        assert client_ep.state_counts() == {"TIME_WAIT": 2}
        assert client_ep.counters["TCPTimeWaitOverflow"] == 1
        assert [c.state for c in clients] == [State.TIME_WAIT, State.TIME_WAIT, State.CLOSED]
        assert len(tw_records(client_ep)) == 2


async def test_retransmitted_fin_is_reacked_and_restarts_time_wait(
    vclock: trio.testing.MockClock,
) -> None:
    msl = 3.0
    # early_retrans off: the FIN comes again by the RTO, not by a tail loss probe
    async with endpoints({"msl": msl, "early_retrans": False}, msl=msl) as (server_ep, client_ep):
        listener = server_ep.listen()
        async with relay_to(server_ep.local_address) as relay:
            client = await client_ep.connect(relay.address, listener.port)
            server = await listener.accept()
            await echo_once(client, server, b"ping")
            lost: list[Segment] = []

            def drop_final_ack(direction: str, seg: Segment) -> bool:
                if direction == "c2s" and server.state is State.LAST_ACK and not lost:
                    lost.append(seg)
                    return True
                return False

            relay.drop = drop_final_ack
            await client.close()
            assert await server.recv() == b""
            t_fin = trio.current_time()
            await server.close()  # FIN; the client's ACK of it is lost
            await settle()
            assert len(lost) == 1 and lost[0].flags == ACK
            [row] = client_ep.connections()
            assert row.state is State.TIME_WAIT
            assert row.timer == pytest.approx(t_fin + 2 * msl, abs=0.05)
            assert server.state is State.LAST_ACK
            # The server's FIN comes again after its RTO; the TIME_WAIT record ACKs it
            # and restarts its 2 x MSL.
            await server.wait_closed()
            t_refin = trio.current_time()
            assert t_refin - t_fin > 0.15
            [row2] = client_ep.connections()
            assert row.timer is not None and row2.timer is not None
            assert row2.timer == pytest.approx(t_refin + 2 * msl, abs=0.05)
            assert row2.timer > row.timer
            await trio.sleep_until(row.timer + 0.1)
            assert client.state is State.TIME_WAIT  # the first deadline no longer counts
            await client.wait_closed()
            assert trio.current_time() == pytest.approx(row2.timer, abs=0.05)


# ----------------------------------------------------------------------
# RFC 6191 reopen, tw_reuse


@pytest.mark.parametrize("timestamps", [True, False], ids=["timestamps", "sequence"])
async def test_newer_syn_reopens_the_servers_time_wait(
    vclock: trio.testing.MockClock, timestamps: bool
) -> None:
    opts: dict[str, Any] = {"timestamps": timestamps}
    async with endpoints(opts, ephemeral_ports=(40000, 40000), **opts) as (server_ep, client_ep):
        listener = server_ep.listen()
        _client, _server = await open_and_close(server_ep, client_ep, listener, server_first=True)
        assert server_ep.state_counts() == {"LISTEN": 1, "TIME_WAIT": 1}
        assert client_ep.connections() == []
        await trio.sleep(0.5)
        # The same 4-tuple again (a single ephemeral port): the SYN is newer, so it
        # reaches the listener through the TIME_WAIT record.
        client = await client_ep.connect(server_ep.local_address)
        assert client.local_port == 40000
        server = await listener.accept()
        assert server_ep.counters["TWReopened"] == 1
        assert server_ep.state_counts() == {"LISTEN": 1, "ESTABLISHED": 1}
        await echo_once(client, server, b"second incarnation")


@pytest.mark.parametrize("timestamps", [True, False], ids=["timestamps", "sequence"])
async def test_older_syn_gets_an_ack_from_time_wait(
    vclock: trio.testing.MockClock, timestamps: bool
) -> None:
    opts: dict[str, Any] = {"timestamps": timestamps}
    async with utcp.open_endpoint((HOST, 0), **opts) as server_ep:
        listener = server_ep.listen()
        async with utcp.open_endpoint((HOST, 0), **opts) as client_ep:
            client_addr = client_ep.local_address
            client, _server = await open_and_close(
                server_ep, client_ep, listener, server_first=True
            )
        [tw] = tw_records(server_ep).values()
        # The client endpoint is gone; its UDP address sends an old duplicate SYN.
        async with raw_peer(client_addr) as raw:
            ts = ((tw.ts_recent or 0) - 500) & MASK if timestamps else None
            isn = seqadd(tw.rcv_nxt, 1000) if timestamps else (tw.rcv_nxt - 1000) & MASK
            syn = Segment(
                client.local_port,
                listener.port,
                isn,
                0,
                SYN,
                8192,
                mss=MSS,
                timestamps=None if ts is None else (ts, 0),
            )
            await raw.send(syn, server_ep.local_address)
            await raw.wait_for(1)
            [reply] = raw.segments()
            assert reply.flags == ACK
            assert (reply.seq, reply.ack) == (tw.snd_nxt, tw.rcv_nxt)
        assert "TWReopened" not in server_ep.counters
        assert server_ep.state_counts() == {"LISTEN": 1, "TIME_WAIT": 1}


async def test_tw_reuse_after_one_second(vclock: trio.testing.MockClock) -> None:
    async with endpoints(ephemeral_ports=(40000, 40000), tw_reuse=True) as (
        server_ep,
        client_ep,
    ):
        listener = server_ep.listen()
        old, _server = await open_and_close(server_ep, client_ep, listener)
        assert old.state is State.TIME_WAIT
        with pytest.raises(OSError) as exc_info:  # not yet: under 1 s
            await client_ep.connect(server_ep.local_address)
        assert exc_info.value.errno == errno.EADDRNOTAVAIL
        await trio.sleep(1.0)
        client = await client_ep.connect(server_ep.local_address)
        assert client.local_port == 40000
        assert client_ep.counters["TWRecycled"] == 1
        # The old connection's TIME_WAIT ended there.
        await old.wait_closed()
        assert old.state is State.CLOSED
        server = await listener.accept()
        await echo_once(client, server, b"reused")


async def test_without_tw_reuse_time_wait_blocks_the_only_port(
    vclock: trio.testing.MockClock,
) -> None:
    msl = 5.0
    async with endpoints(ephemeral_ports=(40000, 40000), msl=msl) as (server_ep, client_ep):
        listener = server_ep.listen()
        old, _server = await open_and_close(server_ep, client_ep, listener)
        await trio.sleep(1.5)
        with pytest.raises(OSError, match="no free ephemeral port in 40000-40000") as exc_info:
            await client_ep.connect(server_ep.local_address)
        assert exc_info.value.errno == errno.EADDRNOTAVAIL
        await old.wait_closed()  # 2 x msl later the port is free again
        client = await client_ep.connect(server_ep.local_address)
        assert client.local_port == 40000
        assert "TWRecycled" not in client_ep.counters


# ----------------------------------------------------------------------
# RFC 1337


@pytest.mark.parametrize("rfc1337", [True, False])
async def test_rst_in_time_wait(vclock: trio.testing.MockClock, rfc1337: bool) -> None:
    async with utcp.open_endpoint((HOST, 0), rfc1337=rfc1337) as client_ep:
        async with utcp.open_endpoint((HOST, 0)) as server_ep:
            server_addr = server_ep.local_address
            listener = server_ep.listen()
            client, _server = await open_and_close(server_ep, client_ep, listener)
        assert client.state is State.TIME_WAIT
        [tw] = tw_records(client_ep).values()
        t0 = trio.current_time()
        # A RST from the server's address, exactly at RCV.NXT.
        async with raw_peer(server_addr) as raw:
            rst = Segment(listener.port, client.local_port, tw.rcv_nxt, 0, RST)
            await raw.send(rst, client_ep.local_address)
            await settle()
            if rfc1337:
                assert client.state is State.TIME_WAIT
                assert client_ep.state_counts() == {"TIME_WAIT": 1}
            else:
                await client.wait_closed()
                assert trio.current_time() - t0 < 0.1
                assert client_ep.connections() == []
            assert raw.received == []  # never answered


# ----------------------------------------------------------------------
# FIN_WAIT_2 timeout, abortive close


async def test_fin_wait_2_timeout_after_close(vclock: trio.testing.MockClock) -> None:
    async with endpoints(fin_timeout=5.0) as (server_ep, client_ep):
        listener = server_ep.listen()
        client = await client_ep.connect(server_ep.local_address)
        server = await listener.accept()
        t0 = trio.current_time()
        await client.close()
        assert await server.recv() == b""  # the server stays in CLOSE_WAIT
        await settle()
        [row] = client_ep.connections()
        assert row.state is State.FIN_WAIT_2
        assert row.timer == pytest.approx(t0 + 5.0, abs=0.05)
        await client.wait_closed()
        assert trio.current_time() - t0 == pytest.approx(5.0, abs=0.05)
        assert client_ep.connections() == []
        assert server.state is State.CLOSE_WAIT


async def test_fin_wait_2_without_close_stays(vclock: trio.testing.MockClock) -> None:
    async with endpoints(fin_timeout=5.0) as (server_ep, client_ep):
        listener = server_ep.listen()
        client = await client_ep.connect(server_ep.local_address)
        server = await listener.accept()
        await client.shutdown()
        assert await server.recv() == b""
        await trio.sleep(300.0)
        assert client.state is State.FIN_WAIT_2
        [row] = client_ep.connections()
        assert row.state is State.FIN_WAIT_2 and row.timer is None
        await server.send(b"late reply")
        assert await client.recv() == b"late reply"


async def test_close_with_unread_data_resets(vclock: trio.testing.MockClock) -> None:
    async with endpoints() as (server_ep, client_ep):
        listener = server_ep.listen()
        client = await client_ep.connect(server_ep.local_address)
        server = await listener.accept()
        await server.send(b"you will never read this")
        await settle()
        await client.close()
        with pytest.raises(ConnectionResetError):
            await server.recv()
        with pytest.raises(ConnectionResetError):
            await server.send(b"x")
        await settle()
        assert client_ep.connections() == []  # no TIME_WAIT after a reset


async def test_linger_zero_close_aborts(vclock: trio.testing.MockClock) -> None:
    async with endpoints() as (server_ep, client_ep):
        listener = server_ep.listen()
        client = await client_ep.connect(server_ep.local_address, linger=0)
        server = await listener.accept()
        await echo_once(client, server, b"bye")
        await client.close()
        with pytest.raises(ConnectionResetError):
            await server.recv()
        await settle()
        assert client_ep.connections() == []  # no FIN handshake, no TIME_WAIT
        assert client.state is State.CLOSED


# ----------------------------------------------------------------------
# Keepalive and user_timeout


KEEPALIVE: dict[str, Any] = dict(
    keepalive=True, keepalive_time=10.0, keepalive_intvl=2.0, keepalive_probes=3
)


async def test_keepalive_live_peer_stays_up(vclock: trio.testing.MockClock) -> None:
    async with endpoints() as (server_ep, client_ep):
        listener = server_ep.listen()
        client = await client_ep.connect(server_ep.local_address, **KEEPALIVE)
        server = await listener.accept()
        await settle()
        in_before = server_ep.counters["InSegs"]
        out_before = server_ep.counters["OutSegs"]
        await trio.sleep(100.5)  # ten keepalive intervals of silence from the application
        assert client.state is State.ESTABLISHED and server.state is State.ESTABLISHED
        # One probe per idle keepalive_time, each answered.
        assert server_ep.counters["InSegs"] - in_before == 10
        assert server_ep.counters["OutSegs"] - out_before == 10
        assert client.info()["probes"] == 0
        await echo_once(client, server, b"still alive")


async def test_keepalive_silent_peer_times_out(vclock: trio.testing.MockClock) -> None:
    async with endpoints() as (server_ep, client_ep):
        listener = server_ep.listen()
        async with relay_to(server_ep.local_address) as relay:
            client = await client_ep.connect(relay.address, listener.port, **KEEPALIVE)
            server = await listener.accept()
            await echo_once(client, server, b"last words")
            t_last = trio.current_time()  # the last segment the client received
            await trio.sleep(0.2)  # let the delayed ACK through
            relay.drop = lambda direction, seg: True  # the peer goes silent
            with pytest.raises(TimeoutError, match="keepalive"):
                await client.recv()
            elapsed = trio.current_time() - t_last
            # keepalive_time + keepalive_intvl * keepalive_probes
            assert elapsed == pytest.approx(10.0 + 2.0 * 3, abs=0.1)
            probes = [(round(t - t_last, 1), s) for t, d, s in relay.dropped if d == "c2s"]
            assert [t for t, _s in probes] == [10.0, 12.0, 14.0]
            assert all(s.flags == ACK and not s.payload for _t, s in probes)
            assert client.state is State.CLOSED
            assert client_ep.connections() == []


async def test_user_timeout(vclock: trio.testing.MockClock) -> None:
    async with endpoints() as (server_ep, client_ep):
        listener = server_ep.listen()
        async with relay_to(server_ep.local_address) as relay:
            client = await client_ep.connect(relay.address, listener.port, user_timeout=3.0)
            server = await listener.accept()
            await echo_once(client, server, b"warm up")
            relay.drop = lambda direction, seg: True
            t0 = trio.current_time()
            await client.send(b"into the void")  # buffered: returns at once
            with pytest.raises(TimeoutError):
                await client.recv()
            assert trio.current_time() - t0 == pytest.approx(3.0, abs=0.1)
            # retries2 (15) alone would have kept retrying far longer.
            retransmissions = [s for _t, d, s in relay.dropped if d == "c2s" and s.payload]
            assert 2 <= len(retransmissions) < 15


async def test_without_user_timeout_retransmissions_go_on(
    vclock: trio.testing.MockClock,
) -> None:
    async with endpoints() as (server_ep, client_ep):
        listener = server_ep.listen()
        async with relay_to(server_ep.local_address) as relay:
            client = await client_ep.connect(relay.address, listener.port)
            server = await listener.accept()
            await echo_once(client, server, b"warm up")
            relay.drop = lambda direction, seg: True
            await client.send(b"into the void")
            await trio.sleep(30.0)
            assert client.state is State.ESTABLISHED
            client.abort()


# ----------------------------------------------------------------------
# Ports


async def test_ephemeral_port_exhaustion(vclock: trio.testing.MockClock) -> None:
    async with endpoints(ephemeral_ports=(40000, 40001)) as (server_ep, client_ep):
        server_ep.listen()
        a = await client_ep.connect(server_ep.local_address)
        b = await client_ep.connect(server_ep.local_address)
        assert {a.local_port, b.local_port} == {40000, 40001}
        with pytest.raises(OSError, match="no free ephemeral port in 40000-40001") as exc_info:
            await client_ep.connect(server_ep.local_address)
        assert exc_info.value.errno == errno.EADDRNOTAVAIL
        await a.close()
        await b.close()


async def test_listen_twice_is_eaddrinuse() -> None:
    async with utcp.open_endpoint((HOST, 0)) as ep:
        ep.listen(80)
        with pytest.raises(OSError, match="already listened on") as exc_info:
            ep.listen(80)
        assert exc_info.value.errno == errno.EADDRINUSE


async def test_binding_a_used_udp_port_fails() -> None:
    async with utcp.open_endpoint((HOST, 0)) as ep:
        with pytest.raises(OSError, match="cannot bind UDP") as exc_info:
            async with utcp.open_endpoint(ep.local_address):
                pass  # pragma: no cover
        assert exc_info.value.errno == errno.EADDRINUSE


# ----------------------------------------------------------------------
# RFC 5961 challenge ACKs, rate limits


async def test_challenge_acks(vclock: trio.testing.MockClock) -> None:
    async with utcp.open_endpoint((HOST, 0)) as ep, raw_peer() as raw:
        listener = ep.listen()
        addr, port = ep.local_address, ep.local_address[1]
        snd, rcv = await raw.handshake(addr, port, 9100)
        server = await listener.accept()
        raw.received.clear()
        # In-window RST, not exactly RCV.NXT: challenge ACK.
        await raw.send(Segment(9100, port, seqadd(snd, 100), 0, RST), addr)
        await raw.wait_for(1)
        # SYN on an established connection: challenge ACK.
        await raw.send(Segment(9100, port, seqadd(snd, 5), 0, SYN, 8192), addr)
        await raw.wait_for(2)
        # ACK far below SND.UNA: challenge ACK.
        await raw.send(Segment(9100, port, snd, (rcv - 100000) & MASK, ACK, 8192, b"x"), addr)
        await raw.wait_for(3)
        for seg in raw.segments():
            assert (seg.flags, seg.seq, seg.ack) == (ACK, rcv, snd)
        assert server.state is State.ESTABLISHED
        # The connection is unharmed.
        await raw.send(Segment(9100, port, snd, rcv, ACK, 8192, b"real data"), addr)
        assert await server.recv() == b"real data"


async def test_challenge_ack_rate_limit(vclock: trio.testing.MockClock) -> None:
    async with utcp.open_endpoint((HOST, 0), challenge_ack_limit=2) as ep, raw_peer() as raw:
        listener = ep.listen()
        addr, port = ep.local_address, ep.local_address[1]
        snd, _rcv = await raw.handshake(addr, port, 9100)
        server = await listener.accept()
        raw.received.clear()
        for i in range(3):  # within the same second
            await raw.send(Segment(9100, port, seqadd(snd, 100 + i), 0, RST), addr)
        await settle()
        await trio.sleep(0.5)
        assert len(raw.received) == 2  # the third was not sent
        await trio.sleep(1.0)
        raw.received.clear()
        await raw.send(Segment(9100, port, seqadd(snd, 200), 0, RST), addr)
        await raw.wait_for(1)
        assert server.state is State.ESTABLISHED


async def test_rsts_to_unknown_tuples_are_rate_limited(vclock: trio.testing.MockClock) -> None:
    async with utcp.open_endpoint((HOST, 0), rst_limit=2) as ep, raw_peer() as raw:
        addr = ep.local_address
        for i in range(5):
            await raw.send(Segment(1000 + i, 81, 1, 500 + i, ACK, 8192), addr)
        await settle()
        await trio.sleep(0.5)
        assert [(s.flags, s.seq) for s in raw.segments()] == [(RST, 500), (RST, 501)]
        assert ep.counters["OutRsts"] == 2
        assert ep.counters["OutRstsLimited"] == 3
        await trio.sleep(1.0)
        await raw.send(Segment(2000, 81, 41, 0, SYN, 8192), addr)
        await raw.wait_for(3)
        last = raw.segments()[-1]
        assert (last.flags, last.seq, last.ack) == (RST | ACK, 0, 42)


# ----------------------------------------------------------------------
# Observability


async def test_state_counts_and_counters(vclock: trio.testing.MockClock) -> None:
    async with endpoints() as (server_ep, client_ep), raw_peer() as raw:
        assert server_ep.state_counts() == {} and client_ep.state_counts() == {}
        listener = server_ep.listen(backlog=4)
        server_ep.listen(81)
        addr = server_ep.local_address
        # ESTABLISHED (accepted) / ESTABLISHED (not accepted) / half-closed / TIME_WAIT
        established = await client_ep.connect(addr)
        accepted = await listener.accept()
        await echo_once(established, accepted, b"x" * 3000)
        await open_and_close(server_ep, client_ep, listener)
        half = await client_ep.connect(addr)
        await listener.accept()
        await half.shutdown()
        await client_ep.connect(addr)  # never accepted
        await raw.send(Segment(5000, addr[1], 1, 0, SYN, 8192), addr)  # half-open
        await raw.wait_for(1)
        await raw.send(Segment(5001, 99, 1, 0, SYN, 8192), addr)  # closed port: RST
        await raw.wait_for(2)
        await settle()
        assert client_ep.state_counts() == {"ESTABLISHED": 2, "FIN_WAIT_2": 1, "TIME_WAIT": 1}
        assert server_ep.state_counts() == {
            "LISTEN": 2,
            "ESTABLISHED": 2,
            "CLOSE_WAIT": 1,
            "SYN_RECEIVED": 1,
        }
        assert sum(server_ep.state_counts().values()) == len(server_ep.connections())
        [lrow] = [
            r
            for r in server_ep.connections()
            if r.local_port == listener.port and r.state is State.LISTEN
        ]
        assert (lrow.recv_q, lrow.send_q) == (1, 4)  # one waiting, backlog 4
        c = server_ep.counters
        assert c["InSegs"] > 10 and c["OutSegs"] > 10
        assert c["OutRsts"] == 1
        assert "InErrs" not in c
        await raw.sock.sendto(b"not a segment", addr)
        await settle()
        assert server_ep.counters["InErrs"] == 1
        assert client_ep.counters["InSegs"] > 5


# ----------------------------------------------------------------------
# SYN flood


FLOOD_SYNS = 20_000
FLOOD_SOCKETS = 4
LEGIT_CLIENTS = 100
LEGIT_ENDPOINTS = 4


async def test_syn_flood_with_legitimate_clients(vclock: trio.testing.MockClock) -> None:
    """20,000 spoofed SYNs while 100 real clients connect and echo through cookies."""
    rng = random.Random(6528)
    per_socket = FLOOD_SYNS // FLOOD_SOCKETS
    stats = {"sent": 0, "max_syn_queue": 0, "clients_started": 0, "first_echo": 0}
    echoed: list[int] = []
    tracemalloc.start()
    try:
        async with utcp.open_endpoint((HOST, 0)) as server_ep:
            listener = server_ep.listen()
            syn_queue = listener._core.syn_queue
            addr = server_ep.local_address
            syn_backlog = server_ep.options.syn_backlog
            # Pre-built spoofed SYNs: many virtual source ports from a few UDP sockets.
            floods = [
                [
                    encode(Segment(1 + i, addr[1], rng.getrandbits(32), 0, SYN, 65535, mss=1460))
                    for i in range(per_socket)
                ]
                for _ in range(FLOOD_SOCKETS)
            ]
            sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in floods]
            base_mem = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            queue_full = trio.Event()

            async def flood() -> None:
                for start in range(0, per_socket, 50):
                    for sock, datagrams in zip(sockets, floods, strict=True):
                        for d in datagrams[start : start + 50]:
                            sock.sendto(d, addr)
                            stats["sent"] += 1
                    await trio.sleep(0)  # let the endpoint drain its socket
                    stats["max_syn_queue"] = max(stats["max_syn_queue"], len(syn_queue))
                    if len(syn_queue) >= syn_backlog:
                        queue_full.set()
                stats["echoed_during_flood"] = len(echoed)

            async def serve() -> None:
                async with trio.open_nursery() as nursery:
                    for _ in range(LEGIT_CLIENTS):
                        nursery.start_soon(echo_back, await listener.accept())

            async def echo_back(conn: utcp.Connection) -> None:
                await conn.send(await conn.recv())
                await conn.close()

            async def client(ep: utcp.Endpoint, i: int) -> None:
                conn = await ep.connect(addr)
                msg = f"legit client {i}".encode()
                await conn.send(msg)
                assert await conn.recv() == msg
                echoed.append(i)
                if len(echoed) == 1:
                    stats["first_echo"] = stats["sent"]
                await conn.close()

            with trio.fail_after(600):  # virtual seconds
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve)
                    nursery.start_soon(flood)
                    await queue_full.wait()  # the SYN queue is full: cookies from now on
                    stats["clients_started"] = stats["sent"]
                    async with (
                        utcp.open_endpoint((HOST, 0)) as e1,
                        utcp.open_endpoint((HOST, 0)) as e2,
                        utcp.open_endpoint((HOST, 0)) as e3,
                        utcp.open_endpoint((HOST, 0)) as e4,
                        trio.open_nursery() as clients,
                    ):
                        client_eps = [e1, e2, e3, e4]
                        for i in range(LEGIT_CLIENTS):
                            clients.start_soon(client, client_eps[i % len(client_eps)], i)
            peak = tracemalloc.get_traced_memory()[1] - base_mem
            counters = server_ep.counters
            for sock in sockets:
                sock.close()
            print(
                f"\nSYN flood: {stats['sent']} SYNs, InSegs={counters['InSegs']}, "
                f"SyncookiesSent={counters.get('SyncookiesSent', 0)}, "
                f"SyncookiesRecv={counters.get('SyncookiesRecv', 0)}, "
                f"max SYN queue={stats['max_syn_queue']}, "
                f"peak memory growth={peak / 2**20:.1f} MiB; clients started after "
                f"{stats['clients_started']} SYNs, first echo after {stats['first_echo']}, "
                f"{stats.get('echoed_during_flood')} echoed before the flood ended; "
                f"virtual time {trio.current_time():.1f} s"
            )
            assert stats["sent"] == FLOOD_SYNS
            assert sorted(echoed) == list(range(LEGIT_CLIENTS))
            assert counters["SyncookiesSent"] > 0
            assert counters["SyncookiesRecv"] > 0
            assert stats["max_syn_queue"] <= syn_backlog and len(syn_queue) <= syn_backlog
            assert peak < 64 * 2**20
    finally:
        tracemalloc.stop()


# ----------------------------------------------------------------------
# Connect timeout; user_timeout overriding keepalive


async def test_connect_timeout_gives_timeout_error(vclock: trio.testing.MockClock) -> None:
    async with utcp.open_endpoint((HOST, 0)) as ep:
        with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as silent:
            await silent.bind((HOST, 0))  # never answers
            t0 = trio.current_time()
            with pytest.raises(TimeoutError, match="timed out after 2.5 s"):
                await ep.connect(silent.getsockname(), timeout=2.5)
            assert trio.current_time() - t0 == pytest.approx(2.5, abs=0.05)
            await trio.testing.wait_all_tasks_blocked()
            assert [r for r in ep.connections() if r.state is not State.LISTEN] == []
        with pytest.raises(ValueError, match="timeout must be > 0"):
            await ep.connect((HOST, 9), timeout=0)
        with pytest.raises(TypeError, match="timeout must be a number"):
            await ep.connect((HOST, 9), timeout="1")  # type: ignore[arg-type]


async def test_user_timeout_overrides_keepalive_probes(vclock: trio.testing.MockClock) -> None:
    # keepalive alone would give up after 10 + 2 x 5 = 20 s; user_timeout=13 ends it
    # at the first probe tick at or after 13 s of silence.
    opts = {
        "keepalive": True,
        "keepalive_time": 10.0,
        "keepalive_intvl": 2.0,
        "keepalive_probes": 5,
    }
    async with endpoints(opts) as (server_ep, client_ep):
        listener = server_ep.listen()
        async with relay_to(server_ep.local_address) as relay:
            client = await client_ep.connect(
                relay.address, listener.port, **opts, user_timeout=13.0
            )
            server = await listener.accept()
            await echo_once(client, server, b"x")
            await settle()
            relay.drop = lambda direction, seg: True  # the peer vanishes
            t0 = trio.current_time()
            with pytest.raises(TimeoutError, match="user_timeout"):
                await client.recv()
            assert trio.current_time() - t0 == pytest.approx(13.0, abs=0.1)
