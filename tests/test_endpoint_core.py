"""Connection management as Linux does it, scripted against the sans-IO endpoint.

These tests drive :class:`EndpointCore` objects directly in virtual time: a
tiny in-file network (:class:`Net`) carries encoded datagrams between them
with a fixed one-way delay, fires connection timers and TIME_WAIT expiries
in time order and does the driver's duties (flush outboxes, adopt new
connections, ``settle``, ``expire_time_wait``), the way the Trio endpoint
does.  Addresses without an endpoint are "raw" peers: the tests inject
hand-built segments from them and read what was sent to them in the log.

Covered: accept-queue overflow ("drop" / "reset"), SYN queue overflow and
SYN cookies, SYN and SYN-ACK retransmission, compact TIME_WAIT (length,
size, ``max_tw_buckets``, FIN retransmission), RFC 6191 reopening,
``tw_reuse``, RFC 1337, FIN_WAIT_2 timeout, abortive close, keepalive,
``user_timeout``, ephemeral ports, RFC 5961 challenge ACKs and their rate
limit, rate-limited RSTs, RFC 6528 ISNs and the observability helpers.
"""

from __future__ import annotations

import errno
import gc
import heapq
import random
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from utcp._core.codec import ACK, FIN, RST, SYN, Segment, decode, encode
from utcp._core.config import Options
from utcp._core.connection import TcpConnection
from utcp._core.endpoint import Address, EndpointCore, ListenerCore
from utcp._core.seq import MASK, seq_gt
from utcp._core.state import State
from utcp._core.syncookies import MSS_TABLE, SLOT_SECONDS, check_cookie
from utcp._core.timewait import TimeWait

CLIENT = ("10.0.0.1", 5001)
SERVER = ("10.0.0.2", 5002)
RAW = ("10.0.0.66", 6666)  # a hand-driven peer (attacker, or a peer that never answers)
PORT = 80
DELAY = 0.005  # one-way delay of the virtual network
MSS = 1452  # mtu 1500 over IPv4


def seqadd(a: int, b: int) -> int:
    return (a + b) & MASK


# ----------------------------------------------------------------------
# A tiny virtual network that plays the driver for every EndpointCore


@dataclass
class Packet:
    """One datagram sent on the virtual network (``dropped`` by the filter or not)."""

    time: float
    src: Address
    dst: Address
    seg: Segment
    dropped: bool = False


class Node:
    """One EndpointCore at one UDP address, with the connections its driver runs."""

    def __init__(self, net: Net, addr: Address, secret: bytes, **options: Any) -> None:
        self.net = net
        self.addr = addr
        self.secret = secret
        self.core = EndpointCore(Options(**options), secret=secret, rng=random.Random(addr[1]))
        #: Connections the driver owns (created by connect or adopted from listeners).
        self.conns: dict[TcpConnection, Address] = {}

    @property
    def counters(self) -> dict[str, int]:
        return dict(self.core.counters)

    def listen(self, port: int = PORT, **options: Any) -> ListenerCore:
        return self.core.listen(port, self.core.options.replace(**options))

    def connect(
        self,
        remote: Address,
        port: int = PORT,
        *,
        local_port: int | None = None,
        **options: Any,
    ) -> TcpConnection:
        conn = self.core.connect(
            remote, port, self.core.options.replace(**options), self.net.now, local_port=local_port
        )
        self.conns[conn] = remote
        self.net.flush(self)
        return conn

    def accept(self, listener: ListenerCore) -> TcpConnection | None:
        """What ``Listener.accept`` does: take the oldest established connection."""
        while listener.accept_queue:
            conn = listener.accept_queue.popleft()
            self.core.owner.pop(conn, None)
            if conn.state is not State.CLOSED:
                return conn
        return None

    def user(self, fn: Callable[[float], object]) -> Any:
        """Run a user call (``lambda now: conn.send(b"x", now)``) and flush its output."""
        result = fn(self.net.now)
        self.net.flush(self)
        return result


class Net:
    """Datagrams between nodes with a fixed delay; timers fired in time order."""

    def __init__(self, delay: float = DELAY, *, now: float = 1000.0) -> None:
        self.now = now
        self.delay = delay
        self.nodes: dict[Address, Node] = {}
        self._queue: list[tuple[float, int, Address, Address, bytes]] = []
        self._n = 0
        self.log: list[Packet] = []
        #: Return True to lose a datagram (it is still logged, marked dropped).
        self.drop: Callable[[Packet], bool] = lambda p: False

    def node(self, addr: Address, **options: Any) -> Node:
        node = Node(self, addr, secret=f"secret-{addr}".encode(), **options)
        self.nodes[addr] = node
        return node

    # -- sending ------------------------------------------------------------
    def send(self, src: Address, dst: Address, data: bytes) -> None:
        packet = Packet(self.now, src, dst, decode(data))
        self.log.append(packet)
        if self.drop(packet):
            packet.dropped = True
            return
        self._n += 1
        heapq.heappush(self._queue, (self.now + self.delay, self._n, src, dst, data))

    def inject(self, src: Address, dst: Address, seg: Segment) -> None:
        """Send a hand-built segment from any address (a raw peer)."""
        self.send(src, dst, encode(seg))

    def flush(self, node: Node) -> None:
        """The driver's duties after any input to ``node``."""
        core = node.core
        for data, remote in core.outbox:
            self.send(node.addr, remote, data)
        core.outbox.clear()
        for conn in core.new_connections:
            key = core.keys.get(conn)
            if key is not None and conn.state is not State.CLOSED:
                node.conns[conn] = key[0]
        core.new_connections.clear()
        for conn, remote in list(node.conns.items()):
            for data in conn.take_datagrams():
                self.send(node.addr, remote, data)
            if core.settle(conn, self.now):
                del node.conns[conn]
        core.tw_closed.clear()
        core.accept_ready.clear()

    # -- running ------------------------------------------------------------
    def _next_timer(self) -> tuple[float, Node, TcpConnection | None] | None:
        best: tuple[float, Node, TcpConnection | None] | None = None
        for node in self.nodes.values():
            for conn in node.conns:
                t = conn.get_timer()
                if t is not None and (best is None or t < best[0]):
                    best = (t, node, conn)
            t = node.core.next_tw_deadline()
            if t is not None and (best is None or t < best[0]):
                best = (t, node, None)
        return best

    def run(self, until: float) -> None:
        """Deliver datagrams and fire timers in time order up to ``until``."""
        for _ in range(1_000_000):
            timer = self._next_timer()
            t_pkt = self._queue[0][0] if self._queue else None
            if t_pkt is not None and t_pkt <= until and (timer is None or t_pkt <= timer[0]):
                _, _, src, dst, data = heapq.heappop(self._queue)
                self.now = max(self.now, t_pkt)
                node = self.nodes.get(dst)
                if node is not None:
                    hit = node.core.receive(data, src, self.now)
                    if hit is not None and hit.state is State.ESTABLISHED:
                        hit.start_keepalive(self.now)
                    self.flush(node)
                continue
            if timer is not None and timer[0] <= until:
                t, node, conn = timer
                self.now = max(self.now, t)
                if conn is not None:
                    conn.handle_timer(self.now)
                else:
                    node.core.expire_time_wait(self.now)
                self.flush(node)
                continue
            break
        else:  # pragma: no cover
            raise AssertionError("the network never went quiet")
        self.now = max(self.now, until)

    def run_for(self, seconds: float) -> None:
        self.run(self.now + seconds)

    # -- looking at the log ---------------------------------------------------
    def sent(
        self,
        src: Address | None = None,
        dst: Address | None = None,
        *,
        since: float = -1.0,
        flags: int | None = None,
    ) -> list[Packet]:
        """Logged datagrams, filtered; ``flags`` must match exactly."""
        return [
            p
            for p in self.log
            if (src is None or p.src == src)
            and (dst is None or p.dst == dst)
            and p.time >= since
            and (flags is None or p.seg.flags == flags)
        ]


def pair(
    net: Net | None = None, *, server_opts: dict[str, Any] | None = None, **client_opts: Any
) -> tuple[Net, Node, Node]:
    net = net or Net()
    client = net.node(CLIENT, **client_opts)
    server = net.node(SERVER, **(server_opts or {}))
    return net, client, server


def establish(
    net: Net, client: Node, server: Node, listener: ListenerCore, **options: Any
) -> tuple[TcpConnection, TcpConnection]:
    """Connect, run the handshake, accept; both sides ESTABLISHED."""
    conn = client.connect(SERVER, listener.port, **options)
    net.run_for(0.1)
    accepted = server.accept(listener)
    assert conn.state is State.ESTABLISHED
    assert accepted is not None and accepted.state is State.ESTABLISHED
    return conn, accepted


def close_pair(net: Net, first: Node, a: TcpConnection, second: Node, b: TcpConnection) -> None:
    """``a`` closes first (it will sit in TIME_WAIT), then ``b`` once it read the FIN."""
    first.user(lambda now: a.close(now))
    net.run_for(0.1)
    assert b.state is State.CLOSE_WAIT and b.at_eof
    second.user(lambda now: b.close(now))
    net.run_for(0.1)


def synack_to(net: Net, port: int, src: Address = SERVER, dst: Address = CLIENT) -> list[Packet]:
    """The SYN-ACKs ``src`` sent to virtual ``port`` at ``dst``."""
    return [p for p in net.sent(src, dst, flags=SYN | ACK) if p.seg.dst_port == port]


# ----------------------------------------------------------------------
# Accept queue overflow (tcp_abort_on_overflow)


def test_accept_queue_full_drop_ignores_final_ack_until_the_application_accepts() -> None:
    net, client, server = pair()
    listener = server.listen(backlog=1)
    c1 = client.connect(SERVER)
    c2 = client.connect(SERVER)  # both SYNs reach the SYN queue before either ACK
    t0 = net.now
    net.run_for(0.1)
    # Both handshakes completed on the client's side...
    assert c1.state is State.ESTABLISHED and c2.state is State.ESTABLISHED
    # ...but the server's accept queue holds one: the second final ACK was ignored.
    assert len(listener.accept_queue) == 1 and listener.accept_queue[0].remote_port == c1.local_port
    [half] = listener.syn_queue
    assert half.state is State.SYN_RECEIVED and half.remote_port == c2.local_port
    assert server.counters["ListenOverflows"] == 1
    assert server.counters["ListenDrops"] == 1
    assert not net.sent(SERVER, CLIENT, flags=RST)

    # The server retransmits its SYN-ACK 1 s later; the ESTABLISHED client re-ACKs;
    # the accept queue is still full, so that ACK is ignored too.
    net.run(t0 + 2.5)
    assert [round(p.time - t0, 6) for p in synack_to(net, c2.local_port)] == [DELAY, DELAY + 1.0]
    re_acks = [
        p
        for p in net.sent(CLIENT, SERVER, flags=ACK, since=t0 + 1.0)
        if p.seg.src_port == c2.local_port
    ]
    assert len(re_acks) == 1 and re_acks[0].seg.ack == seqadd(half.iss, 1)
    assert re_acks[0].seg.seq == c2.snd_nxt
    assert server.counters["ListenOverflows"] == 2
    assert half.state is State.SYN_RECEIVED

    # The application accepts: room frees, and the next SYN-ACK (at 1 + 2 s) brings
    # the ACK that completes the handshake.
    first = server.accept(listener)
    assert first is not None and first.remote_port == c1.local_port
    net.run(t0 + 3.5)
    assert [round(p.time - t0, 6) for p in synack_to(net, c2.local_port)] == [
        DELAY,
        DELAY + 1.0,
        DELAY + 3.0,
    ]
    second = server.accept(listener)
    assert second is half and second.state is State.ESTABLISHED
    assert server.counters["ListenOverflows"] == 2
    # And it works.
    client.user(lambda now: c2.send(b"late but fine", now))
    net.run_for(0.1)
    assert second.read(100, net.now) == b"late but fine"


def test_accept_queue_full_reset_answers_the_final_ack_with_rst() -> None:
    net, client, server = pair()
    listener = server.listen(backlog=1, accept_overflow="reset")
    c1 = client.connect(SERVER)
    c2 = client.connect(SERVER)
    net.run_for(0.1)
    assert c1.state is State.ESTABLISHED
    assert c2.state is State.CLOSED
    assert isinstance(c2.error, ConnectionResetError)
    assert not c2.can_send  # the first use will raise ConnectionResetError
    [rst] = net.sent(SERVER, CLIENT, flags=RST)
    assert rst.seg.dst_port == c2.local_port
    assert rst.seg.seq == c2.rcv_nxt  # <SEQ=SEG.ACK><CTL=RST> for the client's ACK
    assert server.counters["ListenOverflows"] == 1
    assert server.counters["ListenDrops"] == 1
    # The server kept nothing for the refused one.
    assert len(listener.accept_queue) == 1 and not listener.syn_queue
    assert set(server.core.connections) == {(CLIENT, PORT, c1.local_port)}


def test_syn_while_accept_queue_full_is_dropped_and_the_client_backs_off() -> None:
    net, client, server = pair()
    listener = server.listen(backlog=1)
    client.connect(SERVER)
    net.run_for(0.1)
    assert len(listener.accept_queue) == 1  # full, and the application does not accept
    conn = client.connect(SERVER)
    t0 = net.now
    net.run_for(4.0)
    syns = [p for p in net.sent(CLIENT, SERVER, flags=SYN) if p.seg.src_port == conn.local_port]
    assert [round(p.time - t0, 6) for p in syns] == [0.0, 1.0, 3.0]
    assert not synack_to(net, conn.local_port)
    assert server.counters["ListenOverflows"] == 3
    assert conn.state is State.SYN_SENT


# ----------------------------------------------------------------------
# SYN queue overflow and SYN cookies (tcp_syncookies)


def fill_syn_queue(net: Net, port: int = 7000, count: int = 1) -> None:
    """Half-open connections from a raw peer that never completes them."""
    for i in range(count):
        net.inject(RAW, SERVER, Segment(port + i, PORT, 1000 * i, 0, SYN, 65535, mss=MSS))
    net.run_for(0.05)


def test_syn_queue_full_auto_answers_with_a_cookie_and_keeps_no_state() -> None:
    net, client, server = pair()
    listener = server.listen(syn_backlog=1)
    fill_syn_queue(net)
    assert len(listener.syn_queue) == 1
    assert "SyncookiesSent" not in server.counters

    conn = client.connect(SERVER)
    net.run_for(DELAY * 1.5)  # the SYN arrived, its SYN-ACK is on the way
    key = (CLIENT, PORT, conn.local_port)
    assert key not in server.core.connections  # stateless
    assert len(server.core.connections) == 1 and len(listener.syn_queue) == 1
    assert server.counters["SyncookiesSent"] == 1
    [synack] = synack_to(net, conn.local_port)
    seg = synack.seg
    cookie = seg.seq
    assert seg.ack == seqadd(conn.iss, 1)
    # A cookie cannot carry window scale, SACK or timestamps (no timestamps: as Linux
    # without TCP timestamps).
    assert seg.mss == MSS and seg.wscale is None and not seg.sack_permitted
    assert seg.timestamps is None
    # The ISN is a cookie: 5-bit 64 s counter, 3-bit MSS index, 24-bit MAC.
    assert cookie != server.core.isn(CLIENT, PORT, conn.local_port, synack.time)
    assert cookie >> 27 == int(synack.time // SLOT_SECONDS) & 0x1F
    assert MSS_TABLE[(cookie >> 24) & 7] == MSS
    tuple_id = f"{CLIENT[0]}|{CLIENT[1]}|{PORT}|{conn.local_port}".encode()
    assert check_cookie(server.secret, tuple_id, conn.iss, cookie, synack.time) == MSS

    # The client's ACK (cookie + 1) creates the connection directly in ESTABLISHED.
    net.run_for(0.1)
    assert conn.state is State.ESTABLISHED
    assert server.counters["SyncookiesRecv"] == 1
    assert "SyncookiesFailed" not in server.counters
    accepted = server.accept(listener)
    assert accepted is not None and accepted.state is State.ESTABLISHED
    assert accepted.iss == cookie and accepted.remote_port == conn.local_port
    for side in (conn.info(), accepted.info()):
        assert not side["timestamps"] and not side["sack"]
        assert side["snd_wscale"] == 0 and side["rcv_wscale"] == 0
    assert accepted.info()["snd_mss"] == MSS
    # Data flows both ways.
    client.user(lambda now: conn.send(b"ping" * 1000, now))
    net.run_for(0.2)
    assert accepted.read(1 << 20, net.now) == b"ping" * 1000
    server.user(lambda now: accepted.send(b"pong", now))
    net.run_for(0.2)
    assert conn.read(100, net.now) == b"pong"


def cookie_for_raw_syn(net: Net, port: int, isn: int) -> int:
    """Send a SYN from the raw peer and return the cookie ISN of the SYN-ACK."""
    net.inject(RAW, SERVER, Segment(port, PORT, isn, 0, SYN, 65535, mss=MSS))
    net.run_for(DELAY * 2)
    [synack] = synack_to(net, port, dst=RAW)
    assert synack.seg.ack == seqadd(isn, 1)
    return synack.seg.seq


def raw_ack(net: Net, port: int, isn: int, cookie_ack: int, payload: bytes = b"") -> None:
    net.inject(RAW, SERVER, Segment(port, PORT, seqadd(isn, 1), cookie_ack, ACK, 65535, payload))
    net.run_for(DELAY * 2)


def test_forged_cookie_is_rejected_with_rst() -> None:
    net, _client, server = pair()
    listener = server.listen(syn_backlog=1)
    fill_syn_queue(net)
    isn = 0x12345678
    cookie = cookie_for_raw_syn(net, 8000, isn)
    # Wrong ACK number: MAC mismatch.
    raw_ack(net, 8000, isn, seqadd(cookie, 2))
    assert server.counters["SyncookiesFailed"] == 1
    [rst] = net.sent(SERVER, RAW, flags=RST)
    assert rst.seg.seq == seqadd(cookie, 2) and rst.seg.dst_port == 8000
    # An ACK for a SYN that was never sent (a blind guess) fails the same way.
    raw_ack(net, 8001, 0xABCDEF, 0x42424242)
    assert server.counters["SyncookiesFailed"] == 2
    assert len(net.sent(SERVER, RAW, flags=RST)) == 2
    assert "SyncookiesRecv" not in server.counters
    assert not listener.accept_queue
    assert len(server.core.connections) == 1  # just the half-open from fill_syn_queue
    # The genuine ACK still works.
    raw_ack(net, 8000, isn, seqadd(cookie, 1), b"hello")
    assert server.counters["SyncookiesRecv"] == 1
    conn = server.accept(listener)
    assert conn is not None and conn.state is State.ESTABLISHED
    assert conn.read(10, net.now) == b"hello"  # data on the cookie ACK is kept


def test_stale_cookie_is_rejected_with_rst() -> None:
    net, _client, server = pair()
    listener = server.listen(syn_backlog=1)
    fill_syn_queue(net)
    isn = 777
    cookie = cookie_for_raw_syn(net, 8000, isn)
    t_cookie = net.now
    # Several 64 s slots later.  The first half-open gave up long ago (SYN-ACK
    # retries), so refill the queue: the flood goes on and cookies are being sent.
    net.run(t_cookie + 4 * SLOT_SECONDS)
    assert not listener.syn_queue
    fill_syn_queue(net, port=7100)
    cookie_for_raw_syn(net, 8100, 1)
    raw_ack(net, 8000, isn, seqadd(cookie, 1))
    assert server.counters["SyncookiesFailed"] == 1
    assert "SyncookiesRecv" not in server.counters
    rsts = [p for p in net.sent(SERVER, RAW, flags=RST) if p.seg.dst_port == 8000]
    assert len(rsts) == 1 and rsts[0].seg.seq == seqadd(cookie, 1)
    assert not listener.accept_queue


@pytest.mark.parametrize("age_slots", [1, 2])
def test_cookie_up_to_two_slots_old_is_accepted(age_slots: int) -> None:
    net, _client, server = pair()
    listener = server.listen(syncookies="always")
    net.run(SLOT_SECONDS * 100 + 1.0)  # just after a slot boundary
    cookie = cookie_for_raw_syn(net, 8000, 5)
    net.run(SLOT_SECONDS * (100 + age_slots) + 30.0)
    raw_ack(net, 8000, 5, seqadd(cookie, 1))
    assert server.counters["SyncookiesRecv"] == 1
    assert server.accept(listener) is not None


@pytest.mark.parametrize("age_slots", [3, 10])
def test_cookie_three_or_more_slots_old_is_rejected(age_slots: int) -> None:
    net, _client, server = pair()
    listener = server.listen(syncookies="always")
    net.run(SLOT_SECONDS * 100 + 1.0)
    cookie = cookie_for_raw_syn(net, 8000, 5)
    net.run(SLOT_SECONDS * (100 + age_slots) + 1.0)
    raw_ack(net, 8000, 5, seqadd(cookie, 1))
    assert server.counters["SyncookiesFailed"] == 1
    assert not listener.accept_queue


def test_cookie_32_slots_old_is_rejected() -> None:
    # The cookie carries only 5 bits of the 64 s counter; the MAC must cover the
    # whole counter (as Linux's does) or a cookie would verify again ~34 min later.
    net, _client, server = pair()
    listener = server.listen(syncookies="always")
    net.run(SLOT_SECONDS * 100 + 1.0)
    cookie = cookie_for_raw_syn(net, 8000, 5)
    net.run(SLOT_SECONDS * 132 + 1.0)  # 32 slots: the 5-bit counter wrapped
    raw_ack(net, 8000, 5, seqadd(cookie, 1))
    assert "SyncookiesRecv" not in server.counters
    assert not listener.accept_queue


def test_syncookies_always_even_with_an_empty_syn_queue() -> None:
    net, client, server = pair()
    listener = server.listen(syncookies="always")
    conn = client.connect(SERVER)
    net.run_for(DELAY * 1.5)
    assert not listener.syn_queue and not server.core.connections
    assert server.counters["SyncookiesSent"] == 1
    net.run_for(0.1)
    assert conn.state is State.ESTABLISHED
    assert server.counters["SyncookiesRecv"] == 1
    accepted = server.accept(listener)
    assert accepted is not None and accepted.state is State.ESTABLISHED
    client.user(lambda now: conn.send(b"x", now))
    net.run_for(0.1)
    assert accepted.read(10, net.now) == b"x"


def test_syncookies_never_drops_the_syn_and_the_client_backs_off() -> None:
    net, client, server = pair()
    listener = server.listen(syn_backlog=1, syncookies="never")
    fill_syn_queue(net)
    [half_open] = listener.syn_queue
    conn = client.connect(SERVER)
    t0 = net.now
    net.run(t0 + 32.0)
    syns = [p for p in net.sent(CLIENT, SERVER, flags=SYN) if p.seg.src_port == conn.local_port]
    # RTO 1 s doubling: retransmissions 1, 2, 4, 8, 16 s apart.
    assert [round(p.time - t0, 6) for p in syns] == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0]
    assert not synack_to(net, conn.local_port)  # dropped silently
    assert not net.sent(SERVER, CLIENT)
    assert server.counters["TCPReqQFullDrop"] == 6
    assert server.counters["ListenDrops"] == 6
    assert "SyncookiesSent" not in server.counters
    # The half-open one gives up after 5 SYN-ACK retries (63 s); the client's next
    # SYN, at 63 s, finds room.
    net.run(t0 + 64.0)
    assert half_open.state is State.CLOSED and half_open not in listener.syn_queue
    assert conn.state is State.ESTABLISHED
    assert server.accept(listener) is not None


# ----------------------------------------------------------------------
# SYN and SYN-ACK retransmission


@pytest.mark.parametrize(
    ("retries", "times", "give_up"),
    [(3, [0.0, 1.0, 3.0, 7.0], 15.0), (6, [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 63.0], 127.0)],
)
def test_syn_retries_then_timeout(retries: int, times: list[float], give_up: float) -> None:
    net = Net()
    client = net.node(CLIENT, syn_retries=retries)
    conn = client.connect(RAW)  # nobody answers
    t0 = net.now
    net.run(t0 + give_up - 0.001)
    assert conn.state is State.SYN_SENT
    syns = net.sent(CLIENT, RAW, flags=SYN)
    assert [round(p.time - t0, 6) for p in syns] == times
    assert len({p.seg.seq for p in syns}) == 1  # the same SYN each time
    net.run(t0 + give_up)
    assert conn.state is State.CLOSED
    assert isinstance(conn.error, TimeoutError)
    assert not client.core.connections and not client.conns
    net.run_for(1000)
    assert len(net.sent(CLIENT, RAW)) == retries + 1


def test_synack_retries_then_the_half_open_connection_is_forgotten() -> None:
    net = Net()
    server = net.node(SERVER, synack_retries=2)
    listener = server.listen()
    net.inject(RAW, SERVER, Segment(9000, PORT, 4242, 0, SYN, 65535, mss=MSS))
    t0 = net.now + DELAY
    net.run(t0 + 6.9)
    [half] = listener.syn_queue
    synacks = synack_to(net, 9000, dst=RAW)
    assert [round(p.time - t0, 6) for p in synacks] == [0.0, 1.0, 3.0]
    assert len({p.seg.seq for p in synacks}) == 1
    net.run(t0 + 7.0)
    assert half.state is State.CLOSED
    assert not listener.syn_queue and not server.core.connections
    assert not net.sent(SERVER, RAW, flags=RST)  # forgotten silently, as Linux does
    net.run_for(100)
    assert len(net.sent(SERVER, RAW)) == 3
    # A late ACK now reaches only the listener: RST.
    net.inject(RAW, SERVER, Segment(9000, PORT, 4243, seqadd(synacks[0].seg.seq, 1), ACK, 65535))
    net.run_for(0.1)
    assert len(net.sent(SERVER, RAW, flags=RST)) == 1


# ----------------------------------------------------------------------
# TIME_WAIT: length, compact records, max_tw_buckets, FIN retransmission


@pytest.mark.parametrize("msl", [1.0, 7.5])
def test_time_wait_lasts_two_msl_in_a_compact_record(msl: float) -> None:
    net, client, server = pair(msl=msl)
    listener = server.listen()
    conn, accepted = establish(net, client, server, listener)
    close_pair(net, client, conn, server, accepted)
    assert accepted.state is State.CLOSED and not server.core.connections
    key = (SERVER, conn.local_port, PORT)
    # The client's connection left the connection table for a small record.
    assert key not in client.core.connections and conn not in client.conns
    tw = client.core.time_wait[key]
    assert type(tw) is TimeWait and not isinstance(tw, TcpConnection)
    # TIME_WAIT began when the server's FIN arrived.
    [fin] = [p for p in net.sent(SERVER, CLIENT) if p.seg.flags & FIN]
    assert tw.deadline == pytest.approx(fin.time + DELAY + 2 * msl)
    assert client.core.next_tw_deadline() == tw.deadline
    assert client.core.state_counts() == {"TIME_WAIT": 1}
    [row] = client.core.snapshot()
    assert row["state"] is State.TIME_WAIT and row["timer"] == tw.deadline
    assert (row["remote_address"], row["local_port"], row["remote_port"]) == key
    net.run(tw.deadline - 0.001)
    assert key in client.core.time_wait
    net.run(tw.deadline)
    assert key not in client.core.time_wait
    assert client.core.snapshot() == [] and client.core.next_tw_deadline() is None


def test_retransmitted_fin_is_acked_again_and_restarts_time_wait() -> None:
    # early_retrans off on the server: its FIN is resent by the RTO (a tail loss
    # probe would resend it sooner; the TIME_WAIT behaviour is the same).
    net, client, server = pair(msl=2.0, server_opts={"msl": 2.0, "early_retrans": False})
    listener = server.listen()
    conn, accepted = establish(net, client, server, listener)
    key = (SERVER, conn.local_port, PORT)
    # Lose the client's ACK of the server's FIN, once.
    lost: list[Packet] = []

    def drop_first_final_ack(p: Packet) -> bool:
        if p.src == CLIENT and p.seg.flags == ACK and accepted.state is State.LAST_ACK:
            if not lost:
                lost.append(p)
                return True
        return False

    net.drop = drop_first_final_ack
    close_pair(net, client, conn, server, accepted)
    assert len(lost) == 1
    tw = client.core.time_wait[key]
    first_deadline = tw.deadline
    assert accepted.state is State.LAST_ACK
    # The server's RTO (1 s after its FIN, no RTT sample for the FIN) resends the FIN;
    # the TIME_WAIT record answers with an ACK and restarts 2 x MSL.
    net.run_for(2.0)
    fins = [p for p in net.sent(SERVER, CLIENT) if p.seg.flags & FIN]
    assert len(fins) == 2 and fins[0].seg.seq == fins[1].seg.seq
    acks = net.sent(CLIENT, SERVER, flags=ACK, since=fins[1].time)
    assert len(acks) == 1 and not acks[0].dropped
    assert acks[0].seg.seq == tw.snd_nxt and acks[0].seg.ack == tw.rcv_nxt
    assert tw.deadline == pytest.approx(fins[1].time + DELAY + 4.0)
    assert tw.deadline > first_deadline
    assert accepted.state is State.CLOSED
    net.run(first_deadline + 0.01)
    assert key in client.core.time_wait  # the old deadline no longer applies
    net.run(tw.deadline)
    assert key not in client.core.time_wait


def test_max_tw_buckets_caps_the_time_wait_table() -> None:
    net, client, server = pair(max_tw_buckets=2)
    listener = server.listen()
    pairs = [establish(net, client, server, listener) for _ in range(3)]
    for conn, accepted in pairs:
        close_pair(net, client, conn, server, accepted)
    assert len(client.core.time_wait) == 2
    assert client.counters["TCPTimeWaitOverflow"] == 1
    # The third one closed at once instead of entering the table.
    assert pairs[2][0].state is State.CLOSED
    assert (SERVER, pairs[2][0].local_port, PORT) not in client.core.time_wait
    assert client.core.state_counts() == {"TIME_WAIT": 2}


def test_time_wait_entry_costs_less_than_1kib() -> None:
    """5000 TIME_WAIT records in one EndpointCore, measured with tracemalloc."""
    count = 5000
    core = EndpointCore(Options(), secret=b"k" * 32)
    listener = core.listen(PORT, core.options)
    peer = ("10.1.2.3", 40000)

    def lifecycle(port: int, now: float) -> None:
        # The peer opens, the server closes first: the server ends in TIME_WAIT.
        irs = port * 1000
        syn = Segment(port, PORT, irs, 0, SYN, 65535, mss=MSS, timestamps=(1, 0), wscale=7)
        core.receive(encode(syn), peer, now)
        conn = core.new_connections.pop()
        synack = decode(conn.take_datagrams()[0])
        assert synack.timestamps is not None
        ts = (2, synack.timestamps[0])
        ack = Segment(port, PORT, irs + 1, seqadd(synack.seq, 1), ACK, 512, timestamps=ts)
        core.receive(encode(ack), peer, now)
        assert listener.accept_queue.popleft() is conn
        core.owner.pop(conn)
        conn.close(now)
        fin = decode(conn.take_datagrams()[0])
        assert fin.flags & FIN
        finack = Segment(
            port, PORT, irs + 1, seqadd(fin.seq, 1), FIN | ACK, 512, timestamps=(3, ts[1])
        )
        core.receive(encode(finack), peer, now)
        assert conn.state is State.TIME_WAIT
        conn.take_datagrams()
        assert core.settle(conn, now)
        core.accept_ready.clear()

    for port in range(1, 101):  # warm-up: caches, interned host
        lifecycle(port, 1.0)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            lifecycle(1000 + i, 2.0 + i * 1e-3)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(core.time_wait) == count + 100
    assert not core.connections and not listener.accept_queue
    assert all(type(tw) is TimeWait for tw in core.time_wait.values())
    per_entry = (after - before) / count
    print(f"TIME_WAIT entry: {per_entry:.0f} bytes")
    assert per_entry < 1024, per_entry


# ----------------------------------------------------------------------
# RFC 6191: a new SYN may reopen a TIME_WAIT 4-tuple


def server_time_wait(
    timestamps: bool,
) -> tuple[Net, Node, Node, ListenerCore, TcpConnection, TimeWait]:
    """The server closes first, so the server holds the TIME_WAIT record."""
    net, client, server = pair(timestamps=timestamps, server_opts={"timestamps": timestamps})
    listener = server.listen()
    conn, accepted = establish(net, client, server, listener)
    client.user(lambda now: conn.send(b"request", now))
    net.run_for(0.1)
    assert accepted.read(100, net.now) == b"request"
    close_pair(net, server, accepted, client, conn)
    assert conn.state is State.CLOSED and not client.core.connections
    tw = server.core.time_wait[(CLIENT, PORT, conn.local_port)]
    assert (tw.ts_recent is not None) == timestamps
    return net, client, server, listener, conn, tw


@pytest.mark.parametrize("timestamps", [True, False], ids=["timestamps", "sequence"])
def test_rfc6191_newer_syn_reopens_time_wait(timestamps: bool) -> None:
    net, client, server, listener, old, tw = server_time_wait(timestamps)
    key = (CLIENT, PORT, old.local_port)
    net.run_for(0.5)
    new = client.connect(SERVER, local_port=old.local_port)  # the same 4-tuple
    if timestamps:
        assert new.info()["timestamps"] is False  # not negotiated yet; the SYN carries one
        syn = net.sent(CLIENT, SERVER, flags=SYN)[-1].seg
        assert syn.timestamps is not None and seq_gt(syn.timestamps[0], tw.ts_recent or 0)
    else:
        assert seq_gt(new.iss, tw.rcv_nxt)
    net.run_for(0.1)
    assert server.counters["TWReopened"] == 1
    assert key not in server.core.time_wait
    assert new.state is State.ESTABLISHED
    reopened = server.accept(listener)
    assert reopened is not None and reopened.state is State.ESTABLISHED
    # The new incarnation starts above the old one's sequence space.
    assert reopened.iss == seqadd(tw.snd_nxt, 65535 + 2)
    client.user(lambda now: new.send(b"again", now))
    net.run_for(0.1)
    assert reopened.read(10, net.now) == b"again"


@pytest.mark.parametrize("timestamps", [True, False], ids=["timestamps", "sequence"])
def test_rfc6191_older_syn_gets_an_ack_from_time_wait(timestamps: bool) -> None:
    net, _client, server, listener, old, tw = server_time_wait(timestamps)
    key = (CLIENT, PORT, old.local_port)
    t = net.now
    if timestamps:
        # A higher sequence number, but an older timestamp: still an old duplicate.
        syn = Segment(
            old.local_port,
            PORT,
            seqadd(tw.rcv_nxt, 100000),
            0,
            SYN,
            65535,
            mss=MSS,
            timestamps=((tw.ts_recent or 0) - 1000 & MASK, 0),
        )
    else:
        syn = Segment(old.local_port, PORT, (tw.rcv_nxt - 100000) & MASK, 0, SYN, 65535, mss=MSS)
    net.inject(CLIENT, SERVER, syn)
    net.run_for(DELAY * 1.5)
    [reply] = net.sent(SERVER, CLIENT, since=t)
    assert reply.seg.flags == ACK
    assert (reply.seg.seq, reply.seg.ack) == (tw.snd_nxt, tw.rcv_nxt)
    assert key in server.core.time_wait
    assert "TWReopened" not in server.counters
    assert not listener.syn_queue and not server.core.connections


# ----------------------------------------------------------------------
# tw_reuse: connect() may take over a TIME_WAIT 4-tuple of its own


def client_time_wait(**options: Any) -> tuple[Net, Node, Node, ListenerCore, TcpConnection]:
    net, client, server = pair(ephemeral_ports=(40000, 40000), **options)
    listener = server.listen()
    conn, accepted = establish(net, client, server, listener)
    close_pair(net, client, conn, server, accepted)
    assert (SERVER, 40000, PORT) in client.core.time_wait
    return net, client, server, listener, conn


def test_connect_without_tw_reuse_finds_no_port() -> None:
    net, client, _server, _listener, _old = client_time_wait()
    net.run_for(5.0)
    with pytest.raises(OSError, match="no free ephemeral port in 40000-40000") as exc_info:
        client.connect(SERVER)
    assert exc_info.value.errno == errno.EADDRNOTAVAIL
    assert "TIME_WAIT" in str(exc_info.value)


def test_tw_reuse_takes_the_time_wait_tuple_after_one_second() -> None:
    net, client, server, listener, old = client_time_wait(tw_reuse=True)
    key = (SERVER, 40000, PORT)
    tw = client.core.time_wait[key]
    with pytest.raises(OSError) as exc_info:  # too early: less than 1 s
        client.connect(SERVER)
    assert exc_info.value.errno == errno.EADDRNOTAVAIL
    net.run(tw.ts_stamp + 1.0)
    conn = client.connect(SERVER)
    assert conn.local_port == 40000
    assert key not in client.core.time_wait
    assert client.counters["TWRecycled"] == 1
    assert conn.iss == seqadd(tw.snd_nxt, 65535 + 2)
    net.run_for(0.1)
    assert conn.state is State.ESTABLISHED
    accepted = server.accept(listener)
    assert accepted is not None and accepted.remote_port == 40000
    assert old.state is State.TIME_WAIT  # the old object is never told: the core forgot it


def test_tw_reuse_needs_timestamps() -> None:
    net, client, _server, _listener, _old = client_time_wait(tw_reuse=True, timestamps=False)
    net.run_for(10.0)
    with pytest.raises(OSError) as exc_info:
        client.connect(SERVER)
    assert exc_info.value.errno == errno.EADDRNOTAVAIL


# ----------------------------------------------------------------------
# RFC 1337: RST in TIME_WAIT


@pytest.mark.parametrize("rfc1337", [True, False])
def test_rst_in_time_wait(rfc1337: bool) -> None:
    net, client, server = pair(rfc1337=rfc1337)
    listener = server.listen()
    conn, accepted = establish(net, client, server, listener)
    close_pair(net, client, conn, server, accepted)
    key = (SERVER, conn.local_port, PORT)
    tw = client.core.time_wait[key]
    t = net.now
    # A RST in the wrong place is always ignored.
    net.inject(SERVER, CLIENT, Segment(PORT, conn.local_port, seqadd(tw.rcv_nxt, 5), 0, RST))
    net.run_for(0.1)
    assert key in client.core.time_wait
    # The exact RST ends TIME_WAIT only without RFC 1337 protection.
    net.inject(SERVER, CLIENT, Segment(PORT, conn.local_port, tw.rcv_nxt, 0, RST))
    net.run_for(0.1)
    assert (key in client.core.time_wait) is rfc1337
    assert not net.sent(CLIENT, SERVER, since=t)  # RST is never answered


# ----------------------------------------------------------------------
# FIN_WAIT_2 timeout, abortive close


def test_fin_wait_2_times_out_after_close() -> None:
    net, client, server = pair(fin_timeout=5.0)
    listener = server.listen()
    conn, accepted = establish(net, client, server, listener)
    client.user(lambda now: conn.close(now))
    net.run_for(0.1)
    assert conn.state is State.FIN_WAIT_2 and accepted.state is State.CLOSE_WAIT
    [fin_ack] = [p for p in net.sent(SERVER, CLIENT) if p.seg.ack == conn.snd_nxt]
    t_acked = fin_ack.time + DELAY
    assert conn.get_timer() == pytest.approx(t_acked + 5.0)
    net.run(t_acked + 4.99)
    assert conn.state is State.FIN_WAIT_2
    net.run(t_acked + 5.0)
    assert conn.state is State.CLOSED and conn.error is None
    assert not client.core.connections and not client.core.time_wait


def test_fin_wait_2_without_close_waits_forever() -> None:
    net, client, server = pair(fin_timeout=5.0)
    listener = server.listen()
    conn, accepted = establish(net, client, server, listener)
    client.user(lambda now: conn.shutdown(now))  # half-close: still reading
    net.run_for(1000.0)
    assert conn.state is State.FIN_WAIT_2 and conn.get_timer() is None
    server.user(lambda now: accepted.send(b"still here", now))
    net.run_for(0.1)
    assert conn.read(100, net.now) == b"still here"


def test_close_with_unread_data_sends_rst() -> None:
    net, client, server = pair()
    listener = server.listen()
    conn, accepted = establish(net, client, server, listener)
    server.user(lambda now: accepted.send(b"unread", now))
    net.run_for(0.1)
    assert conn.readable == 6
    t = net.now
    client.user(lambda now: conn.close(now))
    [rst] = net.sent(CLIENT, SERVER, since=t)
    assert rst.seg.flags == RST and rst.seg.seq == conn.snd_nxt
    assert conn.state is State.CLOSED
    net.run_for(0.1)
    assert accepted.state is State.CLOSED
    assert isinstance(accepted.error, ConnectionResetError)
    assert not client.core.connections and not client.core.time_wait


def test_linger_zero_close_aborts_with_rst() -> None:
    net, client, server = pair()
    listener = server.listen()
    conn, accepted = establish(net, client, server, listener, linger=0)
    t = net.now
    client.user(lambda now: conn.close(now))
    [rst] = net.sent(CLIENT, SERVER, since=t)
    assert rst.seg.flags == RST
    net.run_for(0.1)
    assert isinstance(accepted.error, ConnectionResetError)
    assert not client.core.time_wait  # no FIN handshake, no TIME_WAIT


# ----------------------------------------------------------------------
# Keepalive and user_timeout


KEEPALIVE: dict[str, Any] = dict(
    keepalive=True, keepalive_time=10.0, keepalive_intvl=2.0, keepalive_probes=3
)


def probes_from(net: Net, conn: TcpConnection, src: Address = CLIENT) -> list[Packet]:
    return [
        p
        for p in net.sent(src, flags=ACK)
        if p.seg.src_port == conn.local_port and p.seg.seq == seqadd(conn.snd_una, -1)
    ]


def test_keepalive_with_a_live_peer_never_fails() -> None:
    net, client, server = pair(**KEEPALIVE)
    listener = server.listen(keepalive=False)
    conn, accepted = establish(net, client, server, listener)
    net.run_for(100.5)
    assert conn.state is State.ESTABLISHED and accepted.state is State.ESTABLISHED
    probes = probes_from(net, conn)
    assert len(probes) == 10  # one per idle keepalive_time
    gaps = [round(b.time - a.time, 6) for a, b in zip(probes, probes[1:], strict=False)]
    assert set(gaps) == {10.0 + 2 * DELAY}  # the answer re-arms the timer
    answers = net.sent(SERVER, CLIENT, flags=ACK, since=probes[0].time)
    assert len(answers) == 10
    assert conn.info()["probes"] == 0


def test_keepalive_with_a_silent_peer_times_out() -> None:
    net, client, server = pair(**KEEPALIVE)
    listener = server.listen(keepalive=False)
    conn, _accepted = establish(net, client, server, listener)
    t_last = max(p.time for p in net.sent(SERVER, CLIENT)) + DELAY
    net.drop = lambda p: p.src == SERVER  # the peer goes silent
    net.run(t_last + 15.99)
    assert conn.state is State.ESTABLISHED
    probes = probes_from(net, conn)
    assert [round(p.time - t_last, 6) for p in probes] == [10.0, 12.0, 14.0]
    net.run(t_last + 16.0)  # keepalive_time + keepalive_intvl * keepalive_probes
    assert conn.state is State.CLOSED
    assert isinstance(conn.error, TimeoutError)


def test_user_timeout_fails_unacknowledged_data_early() -> None:
    net, client, server = pair(user_timeout=3.0, retries2=15)
    listener = server.listen()
    conn, _accepted = establish(net, client, server, listener)
    net.drop = lambda p: p.src == SERVER
    t0 = net.now
    client.user(lambda now: conn.send(b"lost" * 100, now))
    net.run(t0 + 2.99)
    assert conn.state is State.ESTABLISHED
    assert 2 <= conn.info()["retries"] < 15  # retries2 alone would go on for long
    net.run(t0 + 3.0)
    assert conn.state is State.CLOSED
    assert isinstance(conn.error, TimeoutError)


def test_without_user_timeout_retries_go_on() -> None:
    net, client, server = pair(retries2=15)
    listener = server.listen()
    conn, _accepted = establish(net, client, server, listener)
    net.drop = lambda p: p.src == SERVER
    client.user(lambda now: conn.send(b"lost" * 100, now))
    net.run_for(30.0)
    assert conn.state is State.ESTABLISHED


# ----------------------------------------------------------------------
# Ports


def test_ephemeral_port_exhaustion() -> None:
    net, client, server = pair(ephemeral_ports=(40000, 40001))
    server.listen()
    server.listen(81)
    a = client.connect(SERVER)
    b = client.connect(SERVER)
    assert {a.local_port, b.local_port} == {40000, 40001}
    with pytest.raises(OSError, match=r"no free ephemeral port in 40000-40001") as exc_info:
        client.connect(SERVER)
    assert exc_info.value.errno == errno.EADDRNOTAVAIL
    # Another remote port is another 4-tuple: the same local ports serve again.
    c = client.connect(SERVER, 81)
    assert c.local_port in (40000, 40001)
    net.run_for(0.1)
    assert {a.state, b.state, c.state} == {State.ESTABLISHED}


def test_listen_twice_on_a_port() -> None:
    _net, _client, server = pair()
    server.listen(80)
    with pytest.raises(OSError, match="already listened on") as exc_info:
        server.listen(80)
    assert exc_info.value.errno == errno.EADDRINUSE


# ----------------------------------------------------------------------
# RFC 5961 challenge ACKs and their rate limit; rate-limited RSTs


def raw_established(net: Net, server: Node, port: int = 9100) -> tuple[TcpConnection, int, int]:
    """Open a connection from the raw peer by hand; returns (server conn, our seq, its seq)."""
    isn = 0x7FFFFF00
    net.inject(RAW, SERVER, Segment(port, PORT, isn, 0, SYN, 8192, mss=MSS))
    net.run_for(DELAY * 2)
    [synack] = synack_to(net, port, dst=RAW)
    net.inject(
        RAW, SERVER, Segment(port, PORT, seqadd(isn, 1), seqadd(synack.seg.seq, 1), ACK, 8192)
    )
    net.run_for(DELAY * 2)
    conn = server.core.connections[(RAW, PORT, port)]
    assert conn.state is State.ESTABLISHED
    return conn, seqadd(isn, 1), seqadd(synack.seg.seq, 1)


def replies(net: Net, since: float) -> list[Segment]:
    return [p.seg for p in net.sent(SERVER, RAW, since=since)]


def test_rfc5961_challenge_acks() -> None:
    net = Net()
    server = net.node(SERVER)
    server.listen()
    conn, sseq, sack = raw_established(net, server)
    challenge = Segment(PORT, 9100, sack, sseq, ACK, 65535)  # no window scaling

    # An in-window RST that is not exactly RCV.NXT: challenge ACK, no reset.
    t = net.now
    net.inject(RAW, SERVER, Segment(9100, PORT, seqadd(sseq, 100), 0, RST))
    net.run_for(0.1)
    assert replies(net, t) == [challenge]
    assert conn.state is State.ESTABLISHED

    # A SYN on an established connection: challenge ACK.
    t = net.now
    net.inject(RAW, SERVER, Segment(9100, PORT, seqadd(sseq, 10), 0, SYN, 8192, mss=MSS))
    net.run_for(0.1)
    assert replies(net, t) == [challenge]
    assert conn.state is State.ESTABLISHED

    # An ACK older than SND.UNA - MAX.SND.WND: challenge ACK, dropped.
    t = net.now
    net.inject(RAW, SERVER, Segment(9100, PORT, sseq, (sack - 20000) & MASK, ACK, 8192, b"x"))
    net.run_for(0.1)
    assert replies(net, t) == [challenge]
    assert conn.readable == 0  # its data was not taken

    # The exact RST resets.
    net.inject(RAW, SERVER, Segment(9100, PORT, sseq, 0, RST))
    net.run_for(0.1)
    assert conn.state is State.CLOSED and isinstance(conn.error, ConnectionResetError)


def test_challenge_ack_rate_limit() -> None:
    net = Net()
    server = net.node(SERVER, challenge_ack_limit=2.0)
    server.listen()
    conn, sseq, _sack = raw_established(net, server)
    t = net.now
    for i in range(3):  # three in the same instant: the third is not answered
        net.inject(RAW, SERVER, Segment(9100, PORT, seqadd(sseq, 100 + i), 0, RST))
    net.run_for(0.1)
    assert len(replies(net, t)) == 2
    assert conn.state is State.ESTABLISHED
    # SYNs share the same budget.
    net.inject(RAW, SERVER, Segment(9100, PORT, seqadd(sseq, 10), 0, SYN, 8192))
    net.run_for(0.1)
    assert len(replies(net, t)) == 2
    # A second later there is budget again.
    net.run_for(1.0)
    t = net.now
    for i in range(3):
        net.inject(RAW, SERVER, Segment(9100, PORT, seqadd(sseq, 200 + i), 0, RST))
    net.run_for(0.1)
    assert len(replies(net, t)) == 2


def test_rsts_to_unknown_tuples_are_rate_limited() -> None:
    net = Net()
    server = net.node(SERVER, rst_limit=2.0)
    t = net.now
    for i in range(5):
        net.inject(RAW, SERVER, Segment(1000 + i, 81, 1, 500 + i, ACK, 8192))
    net.run_for(0.1)
    rsts = net.sent(SERVER, RAW, flags=RST, since=t)
    # RFC 9293 3.10.7.1: <SEQ=SEG.ACK><CTL=RST> for an ACK to nobody.
    assert [(p.seg.dst_port, p.seg.seq) for p in rsts] == [(1000, 500), (1001, 501)]
    assert server.counters["OutRsts"] == 2
    assert server.counters["OutRstsLimited"] == 3
    # A SYN to a closed port: <SEQ=0><ACK=SEG.SEQ+1><CTL=RST,ACK>, once the budget refills.
    net.run_for(1.0)
    t = net.now
    net.inject(RAW, SERVER, Segment(2000, 81, 41, 0, SYN, 8192))
    net.run_for(0.1)
    [rst] = net.sent(SERVER, RAW, since=t)
    assert (rst.seg.flags, rst.seg.seq, rst.seg.ack) == (RST | ACK, 0, 42)
    # RST is never answered with RST.
    net.inject(RAW, SERVER, Segment(2001, 81, 41, 0, RST))
    net.run_for(0.1)
    assert len(net.sent(SERVER, RAW, since=t)) == 1


# ----------------------------------------------------------------------
# RFC 6528 initial sequence numbers


def test_isn_differs_per_tuple_and_grows_with_time() -> None:
    core = EndpointCore(Options(), secret=b"a" * 32)
    t = 5000.0
    isns = {
        core.isn(remote, lport, rport, t)
        for remote in (("10.0.0.1", 1), ("10.0.0.1", 2), ("10.0.0.2", 1))
        for lport in (80, 81)
        for rport in (40000, 40001)
    }
    assert len(isns) == 12
    r = ("10.0.0.1", 1)
    base = core.isn(r, 80, 40000, t)
    # A 4 microsecond clock: 250,000 ticks per second.
    assert (core.isn(r, 80, 40000, t + 1.0) - base) & MASK == 250_000
    assert (core.isn(r, 80, 40000, t + 10.0) - base) & MASK == 2_500_000
    assert (core.isn(r, 80, 40000, t + 0.5) - base) & MASK == 125_000
    assert (core.isn(r, 80, 40000, t + 8e-6) - base) & MASK in (1, 2)
    series = [core.isn(r, 80, 40000, t + i * 0.01) for i in range(100)]
    assert all(seq_gt(b, a) for a, b in zip(series, series[1:], strict=False))
    # Another secret: another, unpredictable offset for the same 4-tuple.
    other = EndpointCore(Options(), secret=b"b" * 32)
    assert other.isn(r, 80, 40000, t) != base


def test_connect_uses_the_rfc6528_isn() -> None:
    net, client, _server = pair()
    conn = client.connect(SERVER)
    assert conn.iss == client.core.isn(SERVER, conn.local_port, PORT, net.now)
    [syn] = net.sent(CLIENT, SERVER, flags=SYN)
    assert syn.seg.seq == conn.iss


# ----------------------------------------------------------------------
# Observability


def test_state_counts_snapshot_and_counters() -> None:
    net, client, server = pair()
    listener = server.listen(backlog=5)
    # one established and accepted, one established but not accepted,
    # one half-closed by the client, one closed into TIME_WAIT.
    c1, s1 = establish(net, client, server, listener)
    c3, s3 = establish(net, client, server, listener)
    c4, s4 = establish(net, client, server, listener)
    c2 = client.connect(SERVER)
    net.run_for(0.1)
    client.user(lambda now: c3.shutdown(now))
    net.run_for(0.1)
    close_pair(net, client, c4, server, s4)
    assert client.core.state_counts() == {"ESTABLISHED": 2, "FIN_WAIT_2": 1, "TIME_WAIT": 1}
    assert server.core.state_counts() == {"LISTEN": 1, "ESTABLISHED": 2, "CLOSE_WAIT": 1}
    rows = server.core.snapshot()
    [lrow] = [r for r in rows if r["state"] is State.LISTEN]
    assert (lrow["local_port"], lrow["recv_q"], lrow["send_q"]) == (PORT, 1, 5)
    assert c2.state is State.ESTABLISHED and len(listener.accept_queue) == 1
    # Queues show in the rows: unread data on the server side of c1.
    client.user(lambda now: c1.send(b"12345", now))
    net.run_for(0.1)
    [r1] = [r for r in server.core.snapshot() if r["remote_port"] == c1.local_port]
    assert r1["recv_q"] == 5 and r1["send_q"] == 0
    counters = server.counters
    assert counters["InSegs"] >= 12
    assert "InErrs" not in counters
    server.core.receive(b"garbage", RAW, net.now)
    assert server.counters["InErrs"] == 1
    assert s1.state is State.ESTABLISHED and s3.state is State.CLOSE_WAIT


def test_out_of_window_syn_counts_against_the_challenge_ack_limit() -> None:
    net = Net()
    server = net.node(SERVER, challenge_ack_limit=2.0)
    server.listen()
    conn, sseq, _sack = raw_established(net, server)
    t = net.now
    for i in range(5):
        net.inject(RAW, SERVER, Segment(9100, PORT, seqadd(sseq, 1_000_000 + i), 0, SYN, 8192))
    net.run_for(0.1)
    assert len(replies(net, t)) == 2
    assert conn.state is State.ESTABLISHED
