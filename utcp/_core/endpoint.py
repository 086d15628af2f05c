"""A sans-IO endpoint: demultiplexing, listeners and stateless replies.

:class:`EndpointCore` owns every :class:`TcpConnection` of one UDP socket,
keyed by the 4-tuple (remote UDP address, local port, remote port); the local
UDP address is the socket's and so is the same for all.  It decodes arriving
datagrams, hands each segment to its connection or listener, answers
segments for nobody with RST (RFC 9293 3.10.7.1) and keeps the SYN and
accept queues of each listener.  Like the rest of the core it never reads a
clock, never touches a socket and takes its randomness from the caller.
"""

from __future__ import annotations

import errno
import hashlib
import random
from collections import Counter, deque
from typing import Any

from .codec import ACK, RST, SYN, CodecError, Segment, decode, encode
from .config import Options
from .connection import TcpConnection
from .seq import MASK
from .state import State

__all__ = ["Address", "EndpointCore", "ListenerCore", "rst_for"]

#: A UDP address as the driver reports it: ``(host, port)``.
Address = tuple[str, int]
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

    @property
    def accept_queue_full(self) -> bool:
        """Linux's ``sk_acceptq_is_full``: more than ``backlog`` waiting."""
        return len(self.accept_queue) > self.backlog - 1 if self.backlog else True


class EndpointCore:
    """Every connection and listener of one UDP socket."""

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
        self._secret = secret or b"\0" * 16
        self._rng = rng if rng is not None else random.Random(0)
        self.connections: dict[Key, TcpConnection] = {}
        self.addresses: dict[TcpConnection, Address] = {}
        self.listeners: dict[int, ListenerCore] = {}
        self.owner: dict[TcpConnection, ListenerCore] = {}
        #: Linux-style counters (``nstat`` names where one exists).
        self.counters: Counter[str] = Counter()
        #: Stateless replies waiting to be sent: ``(datagram, address)``.
        self.outbox: list[tuple[bytes, Address]] = []
        #: Connections created by listeners since the driver last looked.
        self.new_connections: list[TcpConnection] = []
        #: Connections that just moved to a listener's accept queue.
        self.accept_ready: list[ListenerCore] = []

    # ------------------------------------------------------------------
    # Sequence numbers and ports

    def isn(self, remote: Address, local_port: int, remote_port: int, now: float) -> int:
        """RFC 6528: a keyed hash of the 4-tuple plus a 4-microsecond clock."""
        h = hashlib.blake2b(
            f"{remote[0]}|{remote[1]}|{local_port}|{remote_port}".encode(),
            key=self._secret[:64],
            digest_size=4,
        ).digest()
        return (int.from_bytes(h, "big") + int(now * 250_000)) & MASK

    def ts_offset(self, remote: Address, local_port: int, remote_port: int) -> int:
        """RFC 7323 5.4: a per-connection timestamp offset from a keyed hash."""
        h = hashlib.blake2b(
            f"ts|{remote[0]}|{remote[1]}|{local_port}|{remote_port}".encode(),
            key=self._secret[:64],
            digest_size=4,
        ).digest()
        return int.from_bytes(h, "big")

    def pick_port(self, remote: Address, remote_port: int) -> int:
        """An ephemeral local port free for this remote (``OSError(EADDRNOTAVAIL)`` if none)."""
        lo, hi = self.options.ephemeral_ports
        span = hi - lo + 1
        start = self._rng.randrange(span)
        for i in range(span):
            port = lo + (start + i) % span
            if port in self.listeners:
                continue
            if (remote, port, remote_port) not in self.connections:
                return port
        raise OSError(
            errno.EADDRNOTAVAIL,
            f"no free ephemeral port in {lo}-{hi} for {remote[0]}:{remote[1]} port {remote_port}",
        )

    # ------------------------------------------------------------------
    # Opening

    def listen(self, port: int, options: Options) -> ListenerCore:
        """Start listening on virtual ``port``; ``OSError(EADDRINUSE)`` if taken."""
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be 1..65535, got {port}")
        if port in self.listeners:
            raise OSError(errno.EADDRINUSE, f"port {port} is already listened on")
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
            local_port = self.pick_port(remote, remote_port)
        key = (remote, local_port, remote_port)
        if key in self.connections:
            raise OSError(errno.EADDRINUSE, f"4-tuple {key} is in use")
        conn = TcpConnection(
            options,
            local_port=local_port,
            remote_port=remote_port,
            iss=self.isn(remote, local_port, remote_port, now),
            ipv6=self.ipv6,
            ts_offset=self.ts_offset(remote, local_port, remote_port),
        )
        self.connections[key] = conn
        self.addresses[conn] = remote
        conn.connect(now)
        return conn

    def remove(self, conn: TcpConnection) -> None:
        """Forget a connection (the driver calls this once it is CLOSED)."""
        remote = self.addresses.pop(conn, None)
        if remote is not None:
            key = (remote, conn.local_port, conn.remote_port)
            if self.connections.get(key) is conn:
                del self.connections[key]
        listener = self.owner.pop(conn, None)
        if listener is not None:
            listener.syn_queue.discard(conn)
            try:
                listener.accept_queue.remove(conn)
            except ValueError:
                pass

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
        listener = self.listeners.get(seg.dst_port)
        if listener is not None:
            return self._to_listener(listener, seg, remote, now)
        self._reply_rst(seg, remote)
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
            conn.abort(now)
            self._reply_rst(seg, self.addresses[conn])
            return False
        return False  # "drop": ignore the ACK; our SYN-ACK retransmission makes the client retry

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
        self, listener: ListenerCore, seg: Segment, remote: Address, now: float
    ) -> TcpConnection | None:
        """RFC 9293 3.10.7.2: LISTEN."""
        f = seg.flags
        if f & RST:
            return None  # first: ignore RST
        if f & ACK:
            self._reply_rst(seg, remote)  # second: any ACK is bad
            return None
        if not f & SYN:
            return None  # fifth: drop
        if len(listener.syn_queue) >= listener.options.syn_backlog:
            self.counters["ListenDrops"] += 1
            return None
        if listener.accept_queue_full:
            # Linux drops SYNs while the accept queue is full, so clients back off.
            self.counters["ListenOverflows"] += 1
            self.counters["ListenDrops"] += 1
            return None
        conn = TcpConnection(
            listener.options,
            local_port=listener.port,
            remote_port=seg.src_port,
            iss=self.isn(remote, listener.port, seg.src_port, now),
            ipv6=self.ipv6,
            ts_offset=self.ts_offset(remote, listener.port, seg.src_port),
        )
        self.connections[(remote, listener.port, seg.src_port)] = conn
        self.addresses[conn] = remote
        self.owner[conn] = listener
        listener.syn_queue.add(conn)
        conn.accept_syn(seg, now)
        self.new_connections.append(conn)
        return conn

    def _reply_rst(self, seg: Segment, remote: Address) -> None:
        reply = rst_for(seg)
        if reply is not None:
            self.counters["OutRsts"] += 1
            self.outbox.append((encode(reply), remote))

    # ------------------------------------------------------------------
    # Introspection

    def state_counts(self) -> dict[str, int]:
        """Connections per state, like ``netstat -tan | awk '{print $6}' | sort | uniq -c``."""
        counts: Counter[str] = Counter(c.state.value for c in self.connections.values())
        counts["LISTEN"] += len(self.listeners)
        return dict(counts)

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per listener and connection, like ``ss -tan``."""
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
        return rows
