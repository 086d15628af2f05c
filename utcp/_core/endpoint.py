"""A sans-IO endpoint: demultiplexing, listeners, TIME_WAIT and stateless replies.

:class:`EndpointCore` owns every :class:`TcpConnection` of one UDP socket,
keyed by the 4-tuple (remote UDP address, local port, remote port); the local
UDP address is the socket's and so is the same for all.  It decodes arriving
datagrams, hands each segment to its connection, TIME_WAIT record or
listener, answers segments for nobody with RST (RFC 9293 3.10.7.1, rate
limited), and keeps each listener's SYN and accept queues with Linux's
overflow policies and SYN cookies.  Like the rest of the core it never reads
a clock, never touches a socket and takes its randomness from the caller.

A driver (the Trio endpoint, or the deterministic simulator) does four
things with it: feed datagrams to :meth:`EndpointCore.receive`; adopt the
connections listed in :attr:`EndpointCore.new_connections`; after flushing a
connection's outbox call :meth:`EndpointCore.settle` (which moves TIME_WAIT
connections to the compact table and forgets CLOSED ones); and call
:meth:`EndpointCore.expire_time_wait` at :meth:`EndpointCore.next_tw_deadline`.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import random
from collections import Counter, deque
from typing import Any

from .codec import ACK, RST, SYN, CodecError, Segment, decode, encode
from .config import Options
from .connection import TcpConnection
from .ratelimit import RateLimiter
from .seq import MASK
from .state import State
from .syncookies import SLOT_SECONDS, check_cookie, make_cookie
from .timewait import TW_ACK, TW_REMOVE, TW_REOPEN, TimeWait

__all__ = ["Address", "EndpointCore", "Key", "ListenerCore", "rst_for"]

#: A UDP address as the driver reports it: ``(host, port)``.
Address = tuple[str, int]
#: A connection's identity: (remote UDP address, local virtual port, remote virtual port).
Key = tuple[Address, int, int]


def rst_for(seg: Segment) -> Segment | None:
    """The reply RFC 9293 3.10.7.1 prescribes for a segment that reaches no connection.

    None when the segment itself carries RST.
    """
    if seg.flags & RST:
        return None
    if seg.flags & ACK:
        return Segment(seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)
    return Segment(seg.dst_port, seg.src_port, 0, (seg.seq + seg.seg_len) & MASK, RST | ACK, 0)


class ListenerCore:
    """A passive-open port: its options, SYN queue and accept queue."""

    def __init__(self, port: int, options: Options) -> None:
        self.port = port
        self.options = options
        self.backlog = min(options.backlog, options.somaxconn)
        self.syn_queue: set[TcpConnection] = set()
        self.accept_queue: deque[TcpConnection] = deque()
        self.closed = False
        self.cookies_sent_slot: float | None = None  # when cookies were last sent

    @property
    def accept_queue_full(self) -> bool:
        """Linux's ``sk_acceptq_is_full``: ``backlog`` connections already waiting."""
        return len(self.accept_queue) >= self.backlog


class EndpointCore:
    """Every connection, TIME_WAIT record and listener of one UDP socket."""

    def __init__(
        self,
        options: Options,
        *,
        ipv6: bool = False,
        secret: bytes = b"",
        rng: random.Random | None = None,
    ) -> None:
        self.options = options
        self.ipv6 = ipv6
        self._secret = (secret or b"\0" * 32)[:64]
        self._rng = rng if rng is not None else random.Random(0)
        self.connections: dict[Key, TcpConnection] = {}
        self.keys: dict[TcpConnection, Key] = {}
        self.listeners: dict[int, ListenerCore] = {}
        self.owner: dict[TcpConnection, ListenerCore] = {}
        self.time_wait: dict[Key, TimeWait] = {}
        self._tw_heap: list[tuple[float, Key]] = []
        self._hosts: dict[str, str] = {}
        self.challenge_limiter = RateLimiter(options.challenge_ack_limit)
        self.rst_limiter = RateLimiter(options.rst_limit)
        #: Linux-style counters (``nstat`` names where one exists).
        self.counters: Counter[str] = Counter()
        #: Stateless replies waiting to be sent: ``(datagram, address)``.
        self.outbox: list[tuple[bytes, Address]] = []
        #: Connections created by listeners since the driver last looked.
        self.new_connections: list[TcpConnection] = []
        #: Listeners whose accept queue just grew.
        self.accept_ready: list[ListenerCore] = []
        #: TIME_WAIT records that ended early (RST without rfc1337, reopen, reuse).
        self.tw_closed: list[Key] = []

    # ------------------------------------------------------------------
    # Sequence numbers, ports, addresses

    def isn(self, remote: Address, local_port: int, remote_port: int, now: float) -> int:
        """RFC 6528: a keyed hash of the 4-tuple plus a 4-microsecond clock."""
        h = hashlib.blake2b(
            f"{remote[0]}|{remote[1]}|{local_port}|{remote_port}".encode(),
            key=self._secret,
            digest_size=4,
        ).digest()
        return (int.from_bytes(h, "big") + int(now * 250_000)) & MASK

    def ts_offset(self, remote: Address, local_port: int, remote_port: int) -> int:
        """RFC 7323 5.4: a per-connection timestamp offset from a keyed hash."""
        h = hashlib.blake2b(
            f"ts|{remote[0]}|{remote[1]}|{local_port}|{remote_port}".encode(),
            key=self._secret,
            digest_size=4,
        ).digest()
        return int.from_bytes(h, "big")

    def _tuple_id(self, remote: Address, local_port: int, remote_port: int) -> bytes:
        return f"{remote[0]}|{remote[1]}|{local_port}|{remote_port}".encode()

    def _intern(self, remote: Address) -> Address:
        """Share host strings between entries (TIME_WAIT records stay small)."""
        host = self._hosts.setdefault(remote[0], remote[0])
        if len(self._hosts) > 65536:
            self._hosts.clear()
        return (host, remote[1])

    def _tuple_free(self, key: Key, now: float) -> bool:
        """Whether a new connection may use ``key`` (``tw_reuse`` may free a TIME_WAIT one)."""
        if key in self.connections:
            return False
        tw = self.time_wait.get(key)
        if tw is None:
            return True
        return self.options.tw_reuse and tw.reusable(now)

    def pick_port(self, remote: Address, remote_port: int, now: float = 0.0) -> int:
        """An ephemeral local port free for this remote (``OSError(EADDRNOTAVAIL)`` if none).

        Like Linux, 4-tuples in use or in TIME_WAIT are skipped, unless
        ``tw_reuse`` applies to the TIME_WAIT one.
        """
        lo, hi = self.options.ephemeral_ports
        span = hi - lo + 1
        start = self._rng.randrange(span)
        for i in range(span):
            port = lo + (start + i) % span
            if port in self.listeners:
                continue
            if self._tuple_free((remote, port, remote_port), now):
                return port
        raise OSError(
            errno.EADDRNOTAVAIL,
            f"no free ephemeral port in {lo}-{hi} for {remote[0]}:{remote[1]} "
            f"port {remote_port} (all in use or in TIME_WAIT)",
        )

    # ------------------------------------------------------------------
    # Opening

    def listen(self, port: int, options: Options) -> ListenerCore:
        """Start listening on virtual ``port``; ``OSError(EADDRINUSE)`` if taken."""
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be 1..65535, got {port}")
        if port in self.listeners:
            raise OSError(errno.EADDRINUSE, f"virtual port {port} is already listened on")
        listener = ListenerCore(port, options)
        self.listeners[port] = listener
        return listener

    def close_listener(self, listener: ListenerCore, now: float) -> list[TcpConnection]:
        """Stop listening; unaccepted connections are reset (as Linux does). Returns them."""
        listener.closed = True
        if self.listeners.get(listener.port) is listener:
            del self.listeners[listener.port]
        dropped = list(listener.syn_queue) + list(listener.accept_queue)
        listener.syn_queue.clear()
        listener.accept_queue.clear()
        for conn in dropped:
            conn.abort(now)
        return dropped

    def _new_connection(
        self,
        remote: Address,
        local_port: int,
        remote_port: int,
        options: Options,
        now: float,
        iss: int | None = None,
    ) -> TcpConnection:
        remote = self._intern(remote)
        key = (remote, local_port, remote_port)
        conn = TcpConnection(
            options,
            local_port=local_port,
            remote_port=remote_port,
            iss=self.isn(remote, local_port, remote_port, now) if iss is None else iss,
            ipv6=self.ipv6,
            ts_offset=self.ts_offset(remote, local_port, remote_port),
            challenge_limiter=self.challenge_limiter,
        )
        self.connections[key] = conn
        self.keys[conn] = key
        return conn

    def connect(
        self,
        remote: Address,
        remote_port: int,
        options: Options,
        now: float,
        *,
        local_port: int | None = None,
    ) -> TcpConnection:
        """Active open: create the connection and send its SYN."""
        if not 1 <= remote_port <= 65535:
            raise ValueError(f"port must be 1..65535, got {remote_port}")
        if local_port is None:
            local_port = self.pick_port(remote, remote_port, now)
        key = (remote, local_port, remote_port)
        if not self._tuple_free(key, now):
            raise OSError(errno.EADDRINUSE, f"4-tuple {key} is in use or in TIME_WAIT")
        iss = None
        tw = self.time_wait.pop(key, None)
        if tw is not None:
            self.tw_closed.append(key)
            # tw_reuse: start well above the old incarnation, as Linux does.
            self.counters["TWRecycled"] += 1
            iss = (tw.snd_nxt + 65535 + 2) & MASK
        conn = self._new_connection(remote, local_port, remote_port, options, now, iss)
        conn.connect(now)
        return conn

    # ------------------------------------------------------------------
    # Driver duties

    def settle(self, conn: TcpConnection, now: float) -> bool:
        """After the driver flushed ``conn``: move TIME_WAIT to the compact table, forget CLOSED.

        Returns True when the connection left the connection table (its task may end).
        """
        st = conn.state
        if st is State.TIME_WAIT and not conn.has_output:
            key = self.keys.get(conn)
            self.remove(conn)
            if key is None:
                return True
            if len(self.time_wait) >= self.options.max_tw_buckets:
                # Linux: "time wait bucket table overflow": the connection just closes.
                self.counters["TCPTimeWaitOverflow"] += 1
                conn.finish_time_wait()
                return True
            tw = conn.time_wait_record()
            self.time_wait[key] = tw
            heapq.heappush(self._tw_heap, (tw.deadline, key))
            return True
        if st is State.CLOSED:
            self.remove(conn)
            return True
        return False

    def remove(self, conn: TcpConnection) -> None:
        """Forget a connection."""
        if conn.rsts_sent:
            self.counters["OutRsts"] += conn.rsts_sent  # abort(), close() with unread data...
            conn.rsts_sent = 0
        key = self.keys.pop(conn, None)
        if key is not None and self.connections.get(key) is conn:
            del self.connections[key]
        listener = self.owner.pop(conn, None)
        if listener is not None:
            listener.syn_queue.discard(conn)
            try:
                listener.accept_queue.remove(conn)
            except ValueError:
                pass

    def next_tw_deadline(self) -> float | None:
        """When the earliest TIME_WAIT record expires."""
        heap = self._tw_heap
        while heap:
            deadline, key = heap[0]
            tw = self.time_wait.get(key)
            if tw is None or tw.deadline != deadline:
                heapq.heappop(heap)  # stale: removed or restarted
                continue
            return deadline
        return None

    def expire_time_wait(self, now: float) -> list[Key]:
        """Drop TIME_WAIT records whose 2 x MSL is over; returns their keys."""
        expired: list[Key] = []
        heap = self._tw_heap
        while heap and heap[0][0] <= now:
            deadline, key = heapq.heappop(heap)
            tw = self.time_wait.get(key)
            if tw is not None and tw.deadline == deadline:
                del self.time_wait[key]
                expired.append(key)
        return expired

    # ------------------------------------------------------------------
    # Arriving datagrams

    def receive(self, data: bytes, remote: Address, now: float) -> TcpConnection | None:
        """Process one datagram; returns the connection it touched, if any.

        Never raises for anything in ``data``: bad datagrams are counted and dropped.
        """
        try:
            seg = decode(data)
        except CodecError:
            self.counters["InErrs"] += 1
            return None
        self.counters["InSegs"] += 1
        key = (remote, seg.dst_port, seg.src_port)
        conn = self.connections.get(key)
        if conn is not None:
            if conn.state is State.SYN_RECEIVED and conn.passive:
                if not self._admit(conn, seg, now):
                    return conn
            conn.handle_segment(seg, now)
            self._after(conn)
            return conn
        tw = self.time_wait.get(key)
        if tw is not None:
            before = tw.deadline
            action = tw.handle(seg, now)
            if tw.deadline != before:
                heapq.heappush(self._tw_heap, (tw.deadline, key))  # the old entry goes stale
            if action == TW_ACK:
                self.outbox.append((encode(tw.ack(seg.dst_port, seg.src_port, now)), remote))
                return None
            if action == TW_REMOVE:
                del self.time_wait[key]
                self.tw_closed.append(key)
                return None
            if action == TW_REOPEN:
                del self.time_wait[key]
                self.tw_closed.append(key)
                self.counters["TWReopened"] += 1
                listener = self.listeners.get(seg.dst_port)
                if listener is not None:
                    # RFC 6191 / Linux: the new incarnation starts above the old one.
                    return self._to_listener(
                        listener, seg, remote, now, iss=(tw.snd_nxt + 65535 + 2) & MASK
                    )
                self._reply_rst(seg, remote, now)
            return None
        listener = self.listeners.get(seg.dst_port)
        if listener is not None:
            return self._to_listener(listener, seg, remote, now)
        self._reply_rst(seg, remote, now)
        return None

    def _admit(self, conn: TcpConnection, seg: Segment, now: float) -> bool:
        """Accept-queue overflow policy for the handshake's final ACK (Linux semantics)."""
        listener = self.owner.get(conn)
        if listener is None or not (seg.flags & ACK) or seg.flags & (RST | SYN):
            return True
        if not listener.accept_queue_full:
            return True
        self.counters["ListenOverflows"] += 1
        self.counters["ListenDrops"] += 1
        if listener.options.accept_overflow == "reset":
            remote = self.keys[conn][0]
            conn.abort(now)
            conn.take_datagrams()  # the RST below answers this very ACK instead
            self._reply_rst(seg, remote, now, limit=False)
            return False
        return False  # "drop": ignore the ACK; the SYN-ACK retransmission makes the client retry

    def _after(self, conn: TcpConnection) -> None:
        """Move a passive connection to the accept queue once its handshake completes."""
        listener = self.owner.get(conn)
        if listener is None or conn not in listener.syn_queue:
            return
        if conn.state is State.SYN_RECEIVED:
            return
        listener.syn_queue.discard(conn)
        if conn.state is not State.CLOSED and not listener.closed:
            listener.accept_queue.append(conn)
            self.accept_ready.append(listener)

    def _to_listener(
        self,
        listener: ListenerCore,
        seg: Segment,
        remote: Address,
        now: float,
        *,
        iss: int | None = None,
    ) -> TcpConnection | None:
        """RFC 9293 3.10.7.2: LISTEN, with Linux's queues and SYN cookies."""
        f = seg.flags
        if f & RST:
            return None  # first: ignore RST
        if f & ACK:
            if (
                not f & SYN
                and listener.options.syncookies != "never"
                and self._cookies_recent(listener, now)
            ):
                return self._cookie_ack(listener, seg, remote, now)
            self._reply_rst(seg, remote, now)  # second: any ACK is bad
            return None
        if not f & SYN:
            return None  # fifth: drop
        if listener.accept_queue_full:
            # Linux drops SYNs while the accept queue is full, so clients back off.
            self.counters["ListenOverflows"] += 1
            self.counters["ListenDrops"] += 1
            return None
        mode = listener.options.syncookies
        if mode == "always" or len(listener.syn_queue) >= listener.options.syn_backlog:
            if mode == "never":
                self.counters["ListenDrops"] += 1
                self.counters["TCPReqQFullDrop"] += 1
                return None
            self._send_cookie(listener, seg, remote, now)
            return None
        conn = self._new_connection(remote, listener.port, seg.src_port, listener.options, now, iss)
        self.owner[conn] = listener
        listener.syn_queue.add(conn)
        conn.accept_syn(seg, now)
        self.new_connections.append(conn)
        return conn

    # ------------------------------------------------------------------
    # SYN cookies

    def _cookies_recent(self, listener: ListenerCore, now: float) -> bool:
        """Check ACKs against cookies only if cookies went out lately (Linux: recent overflow)."""
        if listener.options.syncookies == "always":
            return True
        sent = listener.cookies_sent_slot
        return sent is not None and now - sent <= 2 * SLOT_SECONDS

    def _send_cookie(
        self, listener: ListenerCore, seg: Segment, remote: Address, now: float
    ) -> None:
        mss = seg.mss if seg.mss else 536
        local_mss = listener.options.mss_for(self.ipv6)
        cookie = make_cookie(
            self._secret,
            self._tuple_id(remote, listener.port, seg.src_port),
            seg.seq,
            min(mss, local_mss),
            now,
        )
        reply = Segment(
            listener.port,
            seg.src_port,
            cookie,
            (seg.seq + 1) & MASK,
            SYN | ACK,
            min(listener.options.rcvbuf, 0xFFFF),
            mss=local_mss,
        )
        listener.cookies_sent_slot = now
        self.counters["SyncookiesSent"] += 1
        self.outbox.append((encode(reply), remote))

    def _cookie_ack(
        self, listener: ListenerCore, seg: Segment, remote: Address, now: float
    ) -> TcpConnection | None:
        mss = check_cookie(
            self._secret,
            self._tuple_id(remote, listener.port, seg.src_port),
            (seg.seq - 1) & MASK,
            (seg.ack - 1) & MASK,
            now,
        )
        if mss is None:
            self.counters["SyncookiesFailed"] += 1
            self._reply_rst(seg, remote, now)
            return None
        self.counters["SyncookiesRecv"] += 1
        if listener.accept_queue_full:
            self.counters["ListenOverflows"] += 1
            self.counters["ListenDrops"] += 1
            if listener.options.accept_overflow == "reset":
                self._reply_rst(seg, remote, now, limit=False)
            return None  # "drop": the client's data or retransmission will bring another ACK
        conn = self._new_connection(
            remote, listener.port, seg.src_port, listener.options, now, (seg.ack - 1) & MASK
        )
        conn.accept_cookie(seg, mss, now)
        if conn.state is State.CLOSED:
            self.remove(conn)
            return None
        self.owner[conn] = listener
        listener.accept_queue.append(conn)
        self.accept_ready.append(listener)
        self.new_connections.append(conn)
        return conn

    def _reply_rst(self, seg: Segment, remote: Address, now: float, *, limit: bool = True) -> None:
        reply = rst_for(seg)
        if reply is None:
            return
        if limit and not self.rst_limiter.allow(now):
            self.counters["OutRstsLimited"] += 1
            return
        self.counters["OutRsts"] += 1
        self.outbox.append((encode(reply), remote))

    # ------------------------------------------------------------------
    # Introspection

    def state_counts(self) -> dict[str, int]:
        """Connections per state, like ``netstat -tan | awk '{print $6}' | sort | uniq -c``."""
        counts: Counter[str] = Counter(c.state.value for c in self.connections.values())
        if self.listeners:
            counts["LISTEN"] += len(self.listeners)
        if self.time_wait:
            counts["TIME_WAIT"] += len(self.time_wait)
        return dict(counts)

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per listener, connection and TIME_WAIT record, like ``ss -tan -o``."""
        rows: list[dict[str, Any]] = []
        for listener in self.listeners.values():
            rows.append(
                {
                    "state": State.LISTEN,
                    "local_port": listener.port,
                    "remote_address": None,
                    "remote_port": None,
                    "recv_q": len(listener.accept_queue),
                    "send_q": listener.backlog,
                    "timer": None,
                }
            )
        for (remote, lport, rport), conn in self.connections.items():
            rows.append(
                {
                    "state": conn.state,
                    "local_port": lport,
                    "remote_address": remote,
                    "remote_port": rport,
                    "recv_q": conn.readable,
                    "send_q": conn.send_queued,
                    "timer": conn.get_timer(),
                }
            )
        for (remote, lport, rport), tw in self.time_wait.items():
            rows.append(
                {
                    "state": State.TIME_WAIT,
                    "local_port": lport,
                    "remote_address": remote,
                    "remote_port": rport,
                    "recv_q": 0,
                    "send_q": 0,
                    "timer": tw.deadline,
                }
            )
        return rows
