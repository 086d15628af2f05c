"""A deterministic network simulator over the sans-IO core.

No sockets, no real time, no trio: :class:`Simulator` owns two (or more)
:class:`~utcp._core.endpoint.EndpointCore` objects at fake UDP addresses,
one :class:`~utcp.netem.Link` per direction between them, and a virtual
clock.  Its event loop does, at each instant, what the Trio driver does in
real time (see the :mod:`utcp._core.endpoint` docstring):

1. deliver the datagrams that are due (:meth:`Link.pop_due`) to
   :meth:`EndpointCore.receive`;
2. adopt the connections listeners created (``new_connections``) and let
   listeners accept them (:class:`SimListener`);
3. fire the connection timers that are due (``get_timer``/``handle_timer``);
4. run the applications (:class:`SimConnection` feeds queued data to
   ``send`` as buffer space frees, reads, shuts down and closes);
5. drain every outbox into the links (the endpoint's stateless replies, then
   each connection's ``take_datagrams()``) and call
   :meth:`EndpointCore.settle` after draining a connection;
6. expire TIME_WAIT records (``next_tw_deadline``/``expire_time_wait``);

and repeats that until the instant is quiet, then moves the clock to the
next event: the earliest link delivery, connection timer or TIME_WAIT
deadline.

Everything is strictly deterministic for a given seed: link randomness,
initial sequence numbers, timestamp offsets and ephemeral ports all come
from seeds derived from the simulator's, hosts, links and connections are
visited in creation order, and nothing depends on set order or ``id()``.

Example::

    sim = Simulator(seed=1, c2s=Impairment(loss=0.05, delay=0.01),
                    s2c=Impairment(loss=0.05, delay=0.01),
                    options=Options(msl=1.0))
    result = sim.transfer(b"x" * 1_000_000, b"y" * 1_000_000)
    assert result.intact
    print(result.duration, result.retransmitted_bytes, result.c2s.stats.dropped_loss)

Or step by step::

    listener = sim.listen(5000)
    client = sim.connect(5000)
    sim.run_until(lambda: bool(listener.accepted))
    server = listener.accepted[0]
    client.send(b"hello")
    client.shutdown()
    sim.run_until(lambda: server.eof)
    assert bytes(server.received) == b"hello"
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._core.config import Options
from ._core.connection import TcpConnection
from ._core.endpoint import Address, EndpointCore, Key, ListenerCore
from ._core.state import SYNCHRONIZED, State
from .netem import Impairment, Link, LinkStats

__all__ = [
    "Address",
    "PathStats",
    "SimConnection",
    "SimHost",
    "SimLink",
    "SimListener",
    "SimulationError",
    "SimulationIdle",
    "SimulationTimeout",
    "Simulator",
    "TransferResult",
    "derive_seed",
]

#: Default fake UDP addresses of the two hosts every simulator starts with.
CLIENT_ADDRESS: Address = ("10.0.0.1", 40000)
SERVER_ADDRESS: Address = ("10.0.0.2", 5000)
#: Default virtual port of :meth:`Simulator.transfer`.
DEFAULT_PORT = 5000
#: Passes over one instant before the loop is declared stuck (a livelock bug).
_MAX_PASSES_PER_INSTANT = 100_000
_READ_SIZE = 1 << 20


def derive_seed(seed: int, *parts: object) -> int:
    """A 64-bit seed for one component (link, endpoint...) of simulator ``seed``.

    Derived with SHA-256 so that it never depends on Python's hash randomisation.
    """
    text = "/".join(["utcp.sim", str(seed), *(str(p) for p in parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _payload_len(datagram: bytes) -> int:
    """TCP payload bytes of an encoded segment (0 if it is too short to tell)."""
    if len(datagram) < 20:
        return 0
    return max(0, len(datagram) - ((datagram[12] >> 4) << 2))


class SimulationError(Exception):
    """The simulation cannot go on (a livelock in one instant, for example)."""


class SimulationTimeout(SimulationError):
    """:meth:`Simulator.run_until` reached its timeout before the predicate held."""


class SimulationIdle(SimulationError):
    """Nothing is left to happen (no datagram in flight, no timer) and the predicate is false."""


# ---------------------------------------------------------------------------
# Links


@dataclass
class PathStats:
    """What happened on one :class:`SimLink`: the netem counters plus byte counts.

    ``stats`` are the link's own :class:`~utcp.netem.LinkStats` (datagrams).
    Byte counts are TCP payload bytes.  A datagram is *corrupt* when the link
    flipped bits in it; ``corrupt_delivered`` counts corrupt datagrams handed
    to the receiving endpoint and ``corrupt_accepted`` those among them that
    the endpoint did not reject as malformed (a corruption the 16-bit
    Internet checksum cannot see, which is possible for 2- or 3-bit flips).
    """

    stats: LinkStats = field(default_factory=LinkStats)
    payload_submitted: int = 0
    payload_dropped: int = 0
    payload_delivered: int = 0
    corrupt_delivered: int = 0
    corrupt_accepted: int = 0
    undeliverable: int = 0

    def copy(self) -> PathStats:
        """An independent snapshot."""
        return PathStats(
            stats=LinkStats(**self.stats.as_dict()),
            payload_submitted=self.payload_submitted,
            payload_dropped=self.payload_dropped,
            payload_delivered=self.payload_delivered,
            corrupt_delivered=self.corrupt_delivered,
            corrupt_accepted=self.corrupt_accepted,
            undeliverable=self.undeliverable,
        )


class SimLink:
    """One direction between two hosts: a :class:`~utcp.netem.Link` plus bookkeeping.

    When the impairment corrupts datagrams, the link remembers the exact bytes
    of every copy it queued, so that a delivered datagram that matches none of
    them is known to be corrupt (see :class:`PathStats`).
    """

    def __init__(self, src: Address, dst: Address, impairment: Impairment, seed: int) -> None:
        self.src = src
        self.dst = dst
        self.link = Link(impairment, seed)
        self.path = PathStats(stats=self.link.stats)
        self._clean: Counter[bytes] | None = Counter() if impairment.corrupt > 0 else None

    @property
    def impairment(self) -> Impairment:
        """The impairment this link applies."""
        return self.link.impairment

    @property
    def stats(self) -> LinkStats:
        """The netem counters (datagrams)."""
        return self.link.stats

    def submit(self, datagram: bytes, now: float) -> None:
        """Hand ``datagram`` to the link at ``now``."""
        link = self.link
        stats = link.stats
        dropped = stats.dropped
        pending = link.pending
        n = _payload_len(datagram)
        self.path.payload_submitted += n
        link.submit(datagram, now)
        if stats.dropped != dropped:
            self.path.payload_dropped += n
        if self._clean is not None and link.pending > pending:
            self._clean[datagram] += link.pending - pending

    def next_deadline(self) -> float | None:
        """When the next datagram is due, if any."""
        return self.link.next_deadline()

    def pop_due(self, now: float) -> list[tuple[bytes, bool]]:
        """The datagrams due at ``now`` with, for each, whether it is known to be corrupt."""
        out = self.link.pop_due(now)
        clean = self._clean
        result: list[tuple[bytes, bool]] = []
        for d in out:
            corrupt = False
            if clean is not None:
                left = clean.get(d, 0)
                if left > 1:
                    clean[d] = left - 1
                elif left == 1:
                    del clean[d]
                else:
                    corrupt = True
            result.append((d, corrupt))
        return result


# ---------------------------------------------------------------------------
# Hosts, listeners and application-level connections


class SimHost:
    """One simulated machine: an :class:`EndpointCore` bound to a fake UDP address."""

    def __init__(self, sim: Simulator, address: Address, options: Options, seed: int) -> None:
        self.sim = sim
        self.address = address
        self.options = options
        self.endpoint = EndpointCore(
            options,
            secret=derive_seed(seed, "secret", *address).to_bytes(8, "big") * 4,
            rng=random.Random(derive_seed(seed, "rng", *address)),
        )
        #: Every connection of this host, in creation order.
        self.connections: list[SimConnection] = []
        #: Connections still in the endpoint's table (timers and outbox are serviced).
        self._live: list[SimConnection] = []
        self._by_core: dict[TcpConnection, SimConnection] = {}
        self._tw: dict[Key, SimConnection] = {}
        self.listeners: dict[int, SimListener] = {}

    @property
    def counters(self) -> Counter[str]:
        """The endpoint's Linux-style counters (``InErrs``, ``InSegs``, ``OutRsts``...)."""
        return self.endpoint.counters

    def __repr__(self) -> str:
        return f"<SimHost {self.address[0]}:{self.address[1]}>"

    def _adopt(self, core: TcpConnection, remote: Address) -> SimConnection:
        conn = SimConnection(self, core, remote)
        self.connections.append(conn)
        self._live.append(conn)
        self._by_core[core] = conn
        return conn


class SimListener:
    """A listening virtual port on a :class:`SimHost`.

    With ``auto_accept`` (the default) every established connection is
    accepted at once, appended to :attr:`accepted` and passed to
    ``on_accept``; otherwise call :meth:`accept`.
    """

    def __init__(
        self,
        host: SimHost,
        core: ListenerCore,
        *,
        auto_accept: bool,
        on_accept: Callable[[SimConnection], None] | None,
    ) -> None:
        self.host = host
        self.core = core
        self.auto_accept = auto_accept
        self.on_accept = on_accept
        #: Connections accepted so far, in order.
        self.accepted: list[SimConnection] = []

    @property
    def port(self) -> int:
        """The virtual port."""
        return self.core.port

    @property
    def pending(self) -> int:
        """Established connections waiting in the accept queue."""
        return len(self.core.accept_queue)

    def accept(self) -> SimConnection | None:
        """Take the next established connection from the accept queue (None if empty)."""
        queue = self.core.accept_queue
        endpoint = self.host.endpoint
        while queue:
            core = queue.popleft()
            endpoint.owner.pop(core, None)
            conn = self.host._by_core.get(core)
            if conn is None or core.state is State.CLOSED:
                continue
            conn.accepted = True
            self.accepted.append(conn)
            if self.on_accept is not None:
                self.on_accept(conn)
            return conn
        return None

    def close(self) -> None:
        """Stop listening; connections not yet accepted are reset (as Linux does)."""
        self.host.endpoint.close_listener(self.core, self.host.sim.now)
        self.host.listeners.pop(self.port, None)


class SimConnection:
    """An application's view of one simulated connection.

    Data given to :meth:`send` waits in an application-side queue and is fed
    to the core's ``send`` as buffer space frees (like a blocking
    ``sendall``).  With ``auto_read`` (the default) everything that arrives
    is read at once into :attr:`received`; otherwise use :meth:`read`.
    :meth:`shutdown` and :meth:`close` take effect once the queued data has
    been handed to the core; with ``close_at_eof`` the connection is closed
    as soon as the peer's FIN has been read and our own data is queued.
    """

    def __init__(self, host: SimHost, core: TcpConnection, remote: Address) -> None:
        self.host = host
        self.core = core
        self.remote = remote
        #: Whether the application has the connection (active opens, accepted passive ones).
        self.accepted = not core.passive
        self.auto_read = True
        self.close_at_eof = False
        #: Every byte read so far (with ``auto_read``).
        self.received = bytearray()
        self._queue: list[memoryview] = []
        self._queued = 0
        self._sent = 0
        self._want_shutdown = False
        self._want_close = False
        self._app_closed = False
        now = host.sim.now
        #: Virtual times of milestones (None until reached).
        self.opened_at: float = now
        self.established_at: float | None = None
        self.sent_all_at: float | None = None
        self.eof_at: float | None = None
        self.closed_at: float | None = None
        self._check_milestones(now)

    def __repr__(self) -> str:
        return (
            f"<SimConnection {self.host.address[0]}/{self.core.local_port} -> "
            f"{self.remote[0]}/{self.core.remote_port} {self.core.state}>"
        )

    # -- state ---------------------------------------------------------------

    @property
    def state(self) -> State:
        """The core connection's state."""
        return self.core.state

    @property
    def error(self) -> OSError | None:
        """Why the connection failed (``TimeoutError``, ``ConnectionResetError``...), if it did."""
        return self.core.error

    @property
    def eof(self) -> bool:
        """The peer's FIN arrived and every byte before it was read."""
        return self.core.at_eof

    @property
    def closed(self) -> bool:
        """The connection reached CLOSED (after TIME_WAIT, if it went through it)."""
        return self.core.state is State.CLOSED

    @property
    def unsent(self) -> int:
        """Bytes the application queued that the core has not taken yet."""
        return self._queued

    @property
    def bytes_queued(self) -> int:
        """Bytes handed to the core's ``send`` so far."""
        return self._sent

    def info(self) -> dict[str, Any]:
        """The core's TCP_INFO-like snapshot."""
        return self.core.info()

    # -- application calls ---------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; it is fed to the connection as its send buffer frees up."""
        if self._want_shutdown or self._want_close:
            raise RuntimeError("send() after shutdown() or close()")
        if isinstance(data, bytearray):
            data = bytes(data)
        view = memoryview(data).cast("B")
        if len(view):
            self._queue.append(view)
            self._queued += len(view)
            self.sent_all_at = None
        self._pump(self.host.sim.now)

    def read(self, max_bytes: int = _READ_SIZE) -> bytes:
        """Read up to ``max_bytes`` directly from the core (for ``auto_read=False``)."""
        data = self.core.read(max_bytes, self.host.sim.now)
        self._check_milestones(self.host.sim.now)
        return data

    def shutdown(self) -> None:
        """Half-close (FIN) once the queued data has been handed to the core."""
        self._want_shutdown = True
        self._pump(self.host.sim.now)

    def close(self) -> None:
        """Full close (like ``close(2)``) once the queued data has been handed to the core."""
        self._want_close = True
        self._pump(self.host.sim.now)

    def abort(self) -> None:
        """Reset the connection now (RST)."""
        self._queue.clear()
        self._queued = 0
        self._app_closed = True
        self.core.abort(self.host.sim.now)
        self._check_milestones(self.host.sim.now)

    # -- driven by the simulator -----------------------------------------------

    def _check_milestones(self, now: float) -> None:
        core = self.core
        if self.established_at is None and core.state in SYNCHRONIZED:
            self.established_at = now
        if self.eof_at is None and core.at_eof:
            self.eof_at = now
        if self.closed_at is None and core.state is State.CLOSED:
            self.closed_at = now
        if self.sent_all_at is None and not self._queued and core.all_acked and self._sent:
            self.sent_all_at = now

    def _pump(self, now: float) -> int:
        """Run the application for one pass; returns how many things it did."""
        if not self.accepted:
            return 0
        core = self.core
        did = 0
        queue = self._queue
        while queue and core.can_send:
            space = core.send_space
            if space <= 0:
                break
            head = queue[0]
            n = core.send(head[:space] if len(head) > space else head, now)
            if n <= 0:
                break
            did += 1
            self._sent += n
            self._queued -= n
            if n == len(head):
                queue.pop(0)
            else:
                queue[0] = head[n:]
        if self.auto_read and core.readable:
            while core.readable:
                self.received += core.read(_READ_SIZE, now)
            did += 1
        if not queue and not self._app_closed and core.state in SYNCHRONIZED:
            # Like an application, act only once connect()/accept() returned.
            if self.close_at_eof and core.at_eof:
                self._want_close = True
            if self._want_close:
                self._app_closed = True
                core.close(now)
                did += 1
            elif self._want_shutdown and not core.fin_queued and core.can_send:
                core.shutdown(now)
                did += 1
        self._check_milestones(now)
        return did


# ---------------------------------------------------------------------------
# Transfers


@dataclass(frozen=True)
class TransferResult:
    """The outcome of :meth:`Simulator.transfer` (times are virtual seconds).

    ``duration`` runs from the client's SYN until both applications had read
    all of the peer's data and its FIN; ``closed_at`` is when both
    connections reached CLOSED (after TIME_WAIT), if the transfer waited for
    it.  Byte counts are application payload.  ``c2s``/``s2c`` (link
    statistics) and the endpoint counters cover everything since the
    simulator was created, so use a fresh :class:`Simulator` per measured
    transfer.
    """

    client_sent: int
    server_sent: int
    client_received: bytes
    server_received: bytes
    client_digest: str
    server_digest: str
    started_at: float
    completed_at: float
    closed_at: float | None
    client_info: dict[str, Any]
    server_info: dict[str, Any]
    client_error: OSError | None
    server_error: OSError | None
    c2s: PathStats
    s2c: PathStats
    client_in_errs: int
    server_in_errs: int
    client_counters: dict[str, int]
    server_counters: dict[str, int]

    @property
    def duration(self) -> float:
        """Seconds from the SYN until both sides had everything (data and FIN)."""
        return self.completed_at - self.started_at

    @property
    def intact(self) -> bool:
        """Every byte arrived exactly once, in order, each way, and neither side failed."""
        return (
            self.client_error is None
            and self.server_error is None
            and len(self.server_received) == self.client_sent
            and len(self.client_received) == self.server_sent
            and hashlib.sha256(self.server_received).hexdigest() == self.client_digest
            and hashlib.sha256(self.client_received).hexdigest() == self.server_digest
        )

    @property
    def bytes_transferred(self) -> int:
        """Application bytes delivered in both directions."""
        return len(self.client_received) + len(self.server_received)

    @property
    def goodput(self) -> float:
        """Delivered application bytes per second of virtual time (both directions)."""
        return self.bytes_transferred / self.duration if self.duration > 0 else 0.0

    @property
    def client_retransmitted(self) -> int:
        """``info()['bytes_retransmitted']`` of the client."""
        return int(self.client_info["bytes_retransmitted"])

    @property
    def server_retransmitted(self) -> int:
        """``info()['bytes_retransmitted']`` of the server."""
        return int(self.server_info["bytes_retransmitted"])

    @property
    def retransmitted_bytes(self) -> int:
        """Payload bytes retransmitted by both sides."""
        return self.client_retransmitted + self.server_retransmitted

    @property
    def lost_bytes(self) -> int:
        """Payload bytes the links dropped (loss, blackout, queue), both directions."""
        return self.c2s.payload_dropped + self.s2c.payload_dropped

    @property
    def segments_lost(self) -> int:
        """Datagrams the links dropped (loss, blackout, queue), both directions."""
        return self.c2s.stats.dropped + self.s2c.stats.dropped

    @property
    def corrupt_dropped(self) -> int:
        """Datagrams both endpoints rejected as malformed (``InErrs``)."""
        return self.client_in_errs + self.server_in_errs


# ---------------------------------------------------------------------------
# The simulator


class Simulator:
    """Hosts, links and a virtual clock; see the module docstring.

    ``c2s`` and ``s2c`` impair the two directions between the default
    :attr:`client` and :attr:`server` hosts; ``options`` applies to both
    unless ``client_options``/``server_options`` override it.  More hosts
    come from :meth:`add_host`, and links between any two hosts from
    :meth:`set_link` (a pair with no explicit link gets an unimpaired one).
    ``max_datagrams`` bounds the datagrams the whole run may send, so that a
    runaway exchange fails fast with :class:`SimulationError`.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        c2s: Impairment | None = None,
        s2c: Impairment | None = None,
        options: Options | None = None,
        client_options: Options | None = None,
        server_options: Options | None = None,
        client_address: Address = CLIENT_ADDRESS,
        server_address: Address = SERVER_ADDRESS,
        start: float = 0.0,
        max_datagrams: int | None = None,
    ) -> None:
        self.seed = seed
        #: Stop with :class:`SimulationError` once this many datagrams were sent
        #: (a guard against ACK storms); None: no limit.
        self.max_datagrams = max_datagrams
        #: Datagrams handed to links so far.
        self.datagrams_sent = 0
        self.now = float(start)
        self.options = options if options is not None else Options()
        self.hosts: dict[Address, SimHost] = {}
        self.links: dict[tuple[Address, Address], SimLink] = {}
        #: Datagrams sent to an address where no host lives.
        self.undeliverable = 0
        #: Optional hook called with ``now`` once per pass, after the applications ran.
        self.hooks: list[Callable[[float], None]] = []
        self.client = self.add_host(client_address, client_options)
        self.server = self.add_host(server_address, server_options)
        self.c2s = self.set_link(client_address, server_address, c2s)
        self.s2c = self.set_link(server_address, client_address, s2c)

    # -- topology --------------------------------------------------------------

    def add_host(self, address: Address, options: Options | None = None) -> SimHost:
        """A new host at the fake UDP ``address`` (``ValueError`` if taken)."""
        address = (str(address[0]), int(address[1]))
        if address in self.hosts:
            raise ValueError(f"a host already lives at {address}")
        host = SimHost(self, address, options if options is not None else self.options, self.seed)
        self.hosts[address] = host
        return host

    def set_link(self, src: Address, dst: Address, impairment: Impairment | None = None) -> SimLink:
        """Create (or replace) the link from ``src`` to ``dst``."""
        link = SimLink(
            src,
            dst,
            impairment if impairment is not None else Impairment(),
            self._link_seed(src, dst),
        )
        self.links[(src, dst)] = link
        return link

    def link(self, src: Address, dst: Address) -> SimLink:
        """The link from ``src`` to ``dst`` (created unimpaired on first use)."""
        link = self.links.get((src, dst))
        if link is None:
            link = self.set_link(src, dst)
        return link

    def _link_seed(self, src: Address, dst: Address) -> int:
        return derive_seed(self.seed, "link", *src, *dst)

    def _host(self, host: SimHost | Address | None, default: SimHost) -> SimHost:
        if host is None:
            return default
        if isinstance(host, SimHost):
            return host
        return self.hosts[(str(host[0]), int(host[1]))]

    # -- opening ---------------------------------------------------------------

    def listen(
        self,
        port: int,
        *,
        host: SimHost | Address | None = None,
        options: Options | None = None,
        auto_accept: bool = True,
        on_accept: Callable[[SimConnection], None] | None = None,
    ) -> SimListener:
        """Listen on virtual ``port`` of ``host`` (default: the server)."""
        h = self._host(host, self.server)
        core = h.endpoint.listen(port, options if options is not None else h.options)
        listener = SimListener(h, core, auto_accept=auto_accept, on_accept=on_accept)
        h.listeners[port] = listener
        return listener

    def connect(
        self,
        port: int,
        *,
        host: SimHost | Address | None = None,
        to: SimHost | Address | None = None,
        options: Options | None = None,
        local_port: int | None = None,
    ) -> SimConnection:
        """Open a connection from ``host`` (default: the client) to ``port`` on ``to``.

        The SYN goes out on the next pass of the event loop.
        """
        h = self._host(host, self.client)
        dst = self._host(to, self.server)
        core = h.endpoint.connect(
            dst.address,
            port,
            options if options is not None else h.options,
            self.now,
            local_port=local_port,
        )
        self._tw_closed(h)
        return h._adopt(core, dst.address)

    # -- the event loop ---------------------------------------------------------

    def next_event_time(self) -> float | None:
        """The earliest link delivery, connection timer or TIME_WAIT deadline."""
        best: float | None = None
        for link in self.links.values():
            t = link.next_deadline()
            if t is not None and (best is None or t < best):
                best = t
        for h in self.hosts.values():
            for conn in h._live:
                t = conn.core.get_timer()
                if t is not None and (best is None or t < best):
                    best = t
            t = h.endpoint.next_tw_deadline()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def step(self) -> bool:
        """Process the current instant, then advance to the next event and process it.

        Returns False (without moving the clock) when nothing is left to happen.
        """
        self._process()
        t = self.next_event_time()
        if t is None:
            return False
        self.now = max(self.now, t)
        self._process()
        return True

    def run_until(self, predicate: Callable[[], bool], *, timeout: float = 3600.0) -> float:
        """Run until ``predicate()`` is true; returns the virtual time.

        Raises :class:`SimulationTimeout` after ``timeout`` virtual seconds and
        :class:`SimulationIdle` if nothing is left to happen first.
        """
        limit = self.now + timeout
        self._process()
        while not predicate():
            t = self.next_event_time()
            if t is None:
                raise SimulationIdle(f"nothing left to happen at t={self.now:.6f}")
            if t > limit:
                self.now = limit
                raise SimulationTimeout(f"predicate still false at t={self.now:.6f}")
            self.now = max(self.now, t)
            self._process()
        return self.now

    def run_for(self, duration: float) -> None:
        """Process every event of the next ``duration`` virtual seconds."""
        limit = self.now + duration
        self._process()
        while True:
            t = self.next_event_time()
            if t is None or t > limit:
                break
            self.now = max(self.now, t)
            self._process()
        self.now = max(self.now, limit)

    def run_until_idle(self, *, timeout: float = 3600.0) -> float:
        """Run until no datagram is in flight and no timer is armed; returns the time."""
        limit = self.now + timeout
        self._process()
        while True:
            t = self.next_event_time()
            if t is None:
                return self.now
            if t > limit:
                self.now = limit
                raise SimulationTimeout(f"still busy at t={self.now:.6f}")
            self.now = max(self.now, t)
            self._process()

    def _process(self) -> None:
        """Handle everything due at the current instant until nothing more happens."""
        for _ in range(_MAX_PASSES_PER_INSTANT):
            if not self._pass():
                return
        raise SimulationError(f"no quiet point at t={self.now:.6f}: livelock")

    def _pass(self) -> int:
        now = self.now
        did = 0
        # 1. deliver due datagrams, link by link in creation order
        for link in self.links.values():
            if (t := link.next_deadline()) is None or t > now:
                continue
            dst = self.hosts.get(link.dst)
            for data, corrupt in link.pop_due(now):
                did += 1
                if dst is None:
                    link.path.undeliverable += 1
                    self.undeliverable += 1
                    continue
                link.path.payload_delivered += _payload_len(data)
                counters = dst.endpoint.counters
                errs = counters["InErrs"]
                dst.endpoint.receive(data, link.src, now)
                if corrupt:
                    link.path.corrupt_delivered += 1
                    if counters["InErrs"] == errs:
                        link.path.corrupt_accepted += 1
        for h in self.hosts.values():
            ep = h.endpoint
            # 2. adopt new connections, accept established ones
            if ep.new_connections:
                for core in ep.new_connections:
                    key = ep.keys.get(core)
                    if key is not None and core not in h._by_core:
                        h._adopt(core, key[0])
                        did += 1
                ep.new_connections.clear()
            if ep.accept_ready:
                ep.accept_ready.clear()
            for listener in h.listeners.values():
                if listener.auto_accept:
                    while listener.accept() is not None:
                        did += 1
            self._tw_closed(h)
            # 3. timers
            for conn in list(h._live):
                core = conn.core
                t = core.get_timer()
                if t is not None and t <= now:
                    core.handle_timer(now)
                    did += 1
                if core.state is State.ESTABLISHED:
                    core.start_keepalive(now)
            # 4. applications
            for conn in list(h._live):
                did += conn._pump(now)
        for hook in self.hooks:
            hook(now)
        # 5. drain outboxes, settle
        for h in self.hosts.values():
            ep = h.endpoint
            if ep.outbox:
                for data, remote in ep.outbox:
                    self._send(h, remote, data, now)
                    did += 1
                ep.outbox.clear()
            kept: list[SimConnection] = []
            for conn in h._live:
                core = conn.core
                out = core.take_datagrams()
                if out:
                    did += len(out)
                    for data in out:
                        self._send(h, conn.remote, data, now)
                key = ep.keys.get(core)
                if ep.settle(core, now):
                    did += 1
                    if core.state is State.TIME_WAIT and key is not None:
                        h._tw[key] = conn
                    conn._check_milestones(now)
                else:
                    kept.append(conn)
            h._live = kept
            # 6. TIME_WAIT expiry
            t = ep.next_tw_deadline()
            if t is not None and t <= now:
                for key in ep.expire_time_wait(now):
                    did += 1
                    self._finish_tw(h, key, now)
        return did

    def inject(self, src: Address, dst: Address, datagram: bytes) -> None:
        """Put ``datagram`` on the link from ``src`` to ``dst`` now, as if ``src`` had sent it."""
        self.link(src, dst).submit(datagram, self.now)

    def _send(self, host: SimHost, remote: Address, data: bytes, now: float) -> None:
        self.datagrams_sent += 1
        if self.max_datagrams is not None and self.datagrams_sent > self.max_datagrams:
            raise SimulationError(
                f"more than {self.max_datagrams} datagrams sent by t={now:.6f}: a storm?"
            )
        if remote not in self.hosts:
            self.undeliverable += 1
            return
        self.link(host.address, remote).submit(data, now)

    def _tw_closed(self, host: SimHost) -> None:
        ep = host.endpoint
        if ep.tw_closed:
            for key in ep.tw_closed:
                self._finish_tw(host, key, self.now)
            ep.tw_closed.clear()

    def _finish_tw(self, host: SimHost, key: Key, now: float) -> None:
        conn = host._tw.pop(key, None)
        if conn is not None:
            conn.core.finish_time_wait()
            conn._check_milestones(now)

    # -- convenience -------------------------------------------------------------

    @property
    def connections(self) -> list[SimConnection]:
        """Every connection of every host, hosts and connections in creation order."""
        return [c for h in self.hosts.values() for c in h.connections]

    def transfer(
        self,
        client_data: bytes,
        server_data: bytes,
        *,
        port: int = DEFAULT_PORT,
        timeout: float = 3600.0,
        wait_closed: bool = True,
        client_options: Options | None = None,
    ) -> TransferResult:
        """Open a connection and move ``client_data`` and ``server_data`` across it.

        The client connects to ``port`` on the server (listening on it if
        nobody does yet).  Each side sends all its data, shuts down after the
        last byte, reads everything, and closes once it has read the peer's
        EOF.  With ``wait_closed`` the run continues until both connections
        reached CLOSED (through TIME_WAIT: use a small ``msl``).  Raises
        :class:`SimulationTimeout` / :class:`SimulationIdle` if that does not
        happen within ``timeout`` virtual seconds; a connection that failed
        (``TimeoutError``, reset) ends the run and shows in the result.
        """
        listener = self.server.listeners.get(port)
        if listener is None:
            listener = self.listen(port)
        accepted_before = len(listener.accepted)
        started = self.now
        client = self.connect(port, options=client_options)
        client.close_at_eof = True
        client.send(client_data)
        client.shutdown()

        def accepted() -> bool:
            return len(listener.accepted) > accepted_before or client.closed

        self.run_until(accepted, timeout=timeout)
        if len(listener.accepted) > accepted_before:
            server = listener.accepted[accepted_before]
            server.close_at_eof = True
            server.send(server_data)
            server.shutdown()
        else:
            server = None
        remaining = started + timeout - self.now

        def done() -> bool:
            if client.closed or server is None:
                return True
            return (client.eof and server.eof) or server.closed

        self.run_until(done, timeout=remaining)
        completed = self.now
        if wait_closed:

            def both_closed() -> bool:
                return client.closed and (server is None or server.closed)

            self.run_until(both_closed, timeout=started + timeout - self.now)
        closed_at: float | None = None
        if client.closed and (server is None or server.closed):
            closed_at = max(
                client.closed_at or self.now, (server.closed_at if server else None) or self.now
            )
        if client.eof_at is not None and server is not None and server.eof_at is not None:
            completed = max(client.eof_at, server.eof_at)
        return TransferResult(
            client_sent=len(client_data),
            server_sent=len(server_data),
            client_received=bytes(client.received),
            server_received=bytes(server.received) if server is not None else b"",
            client_digest=hashlib.sha256(client_data).hexdigest(),
            server_digest=hashlib.sha256(server_data).hexdigest(),
            started_at=started,
            completed_at=completed,
            closed_at=closed_at,
            client_info=client.info(),
            server_info=server.info() if server is not None else {"bytes_retransmitted": 0},
            client_error=client.error,
            server_error=server.error if server is not None else None,
            c2s=self.c2s.path.copy(),
            s2c=self.s2c.path.copy(),
            client_in_errs=self.client.counters["InErrs"],
            server_in_errs=self.server.counters["InErrs"],
            client_counters=dict(self.client.counters),
            server_counters=dict(self.server.counters),
        )
