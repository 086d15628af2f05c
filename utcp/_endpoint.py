"""The Trio driver: one UDP socket, one receive loop, listeners and connections.

The receive loop reads the non-blocking socket until it is empty, feeds each
datagram to the sans-IO :class:`EndpointCore`, and only then flushes and
wakes the connections it touched, so a burst of segments costs one pass per
connection rather than one task switch per segment.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import random
import secrets
import socket as _stdsocket
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import trio

from . import _udp
from ._connection import Connection
from ._core.config import Options
from ._core.connection import TcpConnection
from ._core.endpoint import Address, EndpointCore, Key, ListenerCore
from ._core.state import State
from .pcap import PcapWriter

__all__ = ["ConnectionInfo", "Endpoint", "Listener", "open_endpoint"]

_RECV_SIZE = 65536
#: sendmsg errors that mean "this kernel or device cannot do UDP GSO"
_GSO_ERRORS = frozenset({errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP})


@dataclass(frozen=True)
class ConnectionInfo:
    """One row of :meth:`Endpoint.connections`, like a line of ``ss -tan -o``.

    ``timer`` is the absolute Trio-clock deadline of the next timer, if any.
    """

    state: State
    local_address: tuple[str, int]
    local_port: int
    remote_address: tuple[str, int] | None
    remote_port: int | None
    recv_q: int
    send_q: int
    timer: float | None


def _parse_host(host: object) -> str:
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    return host


def _check_port(port: object, what: str = "port") -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{what} must be an int, not {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"{what} must be in 0..65535, got {port}")
    return port


def _split_address(address: object) -> tuple[str, int]:
    if not isinstance(address, tuple) or len(address) < 2:
        raise TypeError(f"address must be a (host, port) tuple, not {address!r}")
    return _parse_host(address[0]), _check_port(address[1])


class Listener(trio.abc.Listener[Connection]):
    """A passive-open virtual port: a :class:`trio.abc.Listener` of :class:`Connection`."""

    def __init__(self, endpoint: Endpoint, core: ListenerCore) -> None:
        self._endpoint = endpoint
        self._core = core
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._accepting = False

    @property
    def port(self) -> int:
        """The virtual port listened on."""
        return self._core.port

    @property
    def local_address(self) -> tuple[str, int]:
        """The endpoint's bound UDP address."""
        return self._endpoint.local_address

    @property
    def backlog(self) -> int:
        """The accept-queue limit in force (``backlog`` capped by ``somaxconn``)."""
        return self._core.backlog

    def __repr__(self) -> str:
        host, port = self.local_address
        return f"<utcp.Listener {host}:{port}/{self.port}>"

    async def accept(self) -> Connection:
        """Wait for and return the next established connection.

        Raises :class:`trio.ClosedResourceError` once the listener is closed and
        :class:`trio.BusyResourceError` if another task is already accepting
        (the :class:`trio.abc.Listener` contract).
        """
        if self._accepting:
            raise trio.BusyResourceError("another task is already accepting on this listener")
        self._accepting = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("listener was closed")
                queue = self._core.accept_queue
                while queue:
                    core = queue.popleft()
                    conn = self._endpoint._conns.get(core)
                    if conn is not None and core.state is not State.CLOSED:
                        self._endpoint._core.owner.pop(core, None)
                        await trio.lowlevel.cancel_shielded_checkpoint()
                        return conn
                await self._lot.park()
        finally:
            self._accepting = False

    async def aclose(self) -> None:
        """Stop listening; connections not yet accepted are reset."""
        if not self._closed:
            self._closed = True
            self._endpoint._close_listener(self)
            self._lot.unpark_all()
        await trio.lowlevel.checkpoint()


class Endpoint:
    """One UDP socket carrying any number of utcp listeners and connections.

    Create it with :func:`open_endpoint`.
    """

    def __init__(
        self,
        sock: _stdsocket.socket,
        options: Options,
        nursery: trio.Nursery,
        *,
        rng: random.Random | None = None,
        pcap: PcapWriter | None = None,
        offload: bool | None = None,
    ) -> None:
        self._sock = sock
        self._pcap = pcap
        use = offload is not False
        self._gso = use and _udp.gso_supported(sock)
        self._gro = use and _udp.enable_gro(sock)
        self._family = sock.family
        self.options = options
        self._nursery = nursery
        self._core = EndpointCore(
            options,
            ipv6=sock.family == _stdsocket.AF_INET6,
            secret=secrets.token_bytes(32),
            rng=rng if rng is not None else random.Random(secrets.randbits(64)),
        )
        addr = sock.getsockname()
        self._local: tuple[str, int] = (addr[0], addr[1])
        self._conns: dict[TcpConnection, Connection] = {}
        self._listeners: dict[ListenerCore, Listener] = {}
        self._closing = False
        self._closed = False
        self._idle_lot = trio.lowlevel.ParkingLot()
        self._tw_conns: weakref.WeakValueDictionary[Key, Connection] = weakref.WeakValueDictionary()
        self._tw_lot = trio.lowlevel.ParkingLot()
        self._tw_sleep_until = math.inf

    # ------------------------------------------------------------------
    # Public API

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound UDP ``(host, port)``."""
        return self._local

    @property
    def counters(self) -> dict[str, int]:
        """Linux-style counters: InSegs, InErrs, OutRsts, ListenOverflows, ListenDrops..."""
        return dict(self._core.counters)

    def state_counts(self) -> dict[str, int]:
        """Connections per state (the ``netstat | awk`` summary), listeners as LISTEN."""
        return self._core.state_counts()

    def listen(
        self, port: int | None = None, *, backlog: int | None = None, **options: Any
    ) -> Listener:
        """Listen on a virtual ``port`` (default: the UDP port's number).

        ``backlog`` and any per-connection option override the endpoint's.
        Raises ``OSError(EADDRINUSE)`` if the port is already listened on.
        """
        self._check_usable()
        if port is None:
            port = self._local[1]
        _check_port(port)
        if port == 0:
            raise ValueError("virtual port 0 is not valid")
        if backlog is not None:
            options["backlog"] = backlog
        opts = self.options.per_connection(**options)
        core = self._core.listen(port, opts)
        listener = Listener(self, core)
        self._listeners[core] = listener
        return listener

    async def connect(
        self,
        remote_address: tuple[str, int],
        port: int | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> Connection:
        """Open a connection to ``remote_address`` (UDP) and virtual ``port``.

        ``port`` defaults to the remote UDP port's number.  Returns once the
        handshake completes.  Raises ``ConnectionRefusedError`` when answered
        by RST, ``TimeoutError`` after ``syn_retries`` retransmissions or after
        ``timeout`` seconds (if given, whichever comes first; the half-open
        connection is then reset), and ``OSError(EADDRNOTAVAIL)`` when no
        ephemeral port is free.
        """
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(
                    f"timeout must be a number of seconds, not {type(timeout).__name__}"
                )
            if not timeout > 0:
                raise ValueError(f"timeout must be > 0, got {timeout}")
            with trio.move_on_after(timeout):
                return await self.connect(remote_address, port, **options)
            raise TimeoutError(f"connect to {remote_address} timed out after {timeout} s")
        self._check_usable()
        host, rport = _split_address(remote_address)
        if port is None:
            port = rport
        _check_port(port)
        if port == 0 or rport == 0:
            raise ValueError("cannot connect to port 0")
        remote = await self._resolve(host, rport)
        opts = self.options.per_connection(**options)
        core = self._core.connect(remote, port, opts, trio.current_time())
        if self._core.tw_closed:
            self._end_time_wait(self._core.tw_closed)
            self._core.tw_closed.clear()
        conn = self._adopt(core, self._core.keys[core][0])
        try:
            await conn._wait_for(
                lambda: core.state is not State.SYN_SENT and core.state is not State.SYN_RECEIVED
            )
        except BaseException:
            conn.abort()
            raise
        if core.state is State.CLOSED:
            self._core.remove(core)  # gone from connections() at once, not when its task ends
            raise conn._failure()
        core.start_keepalive(trio.current_time())
        return conn

    def connections(self) -> list[ConnectionInfo]:
        """A snapshot of every listener (as LISTEN) and connection, TIME_WAIT included."""
        return [
            ConnectionInfo(
                state=row["state"],
                local_address=self._local,
                local_port=row["local_port"],
                remote_address=row["remote_address"],
                remote_port=row["remote_port"],
                recv_q=row["recv_q"],
                send_q=row["send_q"],
                timer=row["timer"],
            )
            for row in self._core.snapshot()
        ]

    # ------------------------------------------------------------------
    # Internals

    def _check_usable(self) -> None:
        if self._closing or self._closed:
            raise trio.ClosedResourceError("endpoint is closed")

    async def _resolve(self, host: str, port: int) -> Address:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
            literal: str | None = ip.compressed
        except ValueError:
            literal = None
        if literal is None:
            try:
                infos = await trio.socket.getaddrinfo(
                    host, port, self._family, _stdsocket.SOCK_DGRAM
                )
            except _stdsocket.gaierror as exc:
                raise OSError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from None
            if not infos:
                raise OSError(errno.EADDRNOTAVAIL, f"no {self._family.name} address for {host!r}")
            literal = str(infos[0][4][0])
        else:
            fam = _stdsocket.AF_INET6 if ":" in literal else _stdsocket.AF_INET
            if fam != self._family:
                raise ValueError(
                    f"address {host!r} is {fam.name} but the endpoint is bound to "
                    f"{self._family.name} {self._local[0]}"
                )
        return (literal, port)

    def _adopt(self, core: TcpConnection, remote: Address) -> Connection:
        conn = Connection(self, core, remote)
        self._conns[core] = conn
        self._nursery.start_soon(
            conn._run, name=f"utcp-conn-{remote[0]}:{remote[1]}/{core.remote_port}"
        )
        conn._flush()
        return conn

    def _settle(self, conn: Connection) -> bool:
        """Let the core file a flushed connection away; True when its task may end."""
        core = conn._core
        key = self._core.keys.get(core)
        if not self._core.settle(core, trio.current_time()):
            return False
        if core.state is State.TIME_WAIT and key is not None:
            # Now a compact record: remember the Connection (weakly) to tell it when
            # TIME_WAIT ends, and make sure the reaper sleeps no longer than needed.
            self._tw_conns[key] = conn
            deadline = self._core.next_tw_deadline()
            if deadline is not None and deadline < self._tw_sleep_until:
                self._tw_lot.unpark_all()
        return True

    def _forget(self, conn: Connection) -> None:
        self._conns.pop(conn._core, None)
        self._core.remove(conn._core)
        if self._idle_lot:
            self._idle_lot.unpark_all()

    def _end_time_wait(self, keys: list[Key]) -> None:
        for key in keys:
            conn = self._tw_conns.pop(key, None)
            if conn is not None:
                conn._core.finish_time_wait()
                conn._log_changes()
                conn._done.set()
                if conn._app_lot:
                    conn._app_lot.unpark_all()

    async def _time_wait_reaper(self) -> None:
        """Expire TIME_WAIT records: one task for all of them, sleeping until the next."""
        core = self._core
        while True:
            deadline = core.next_tw_deadline()
            self._tw_sleep_until = math.inf if deadline is None else deadline
            with trio.move_on_at(self._tw_sleep_until):
                await self._tw_lot.park()
            self._tw_sleep_until = math.inf
            self._end_time_wait(core.expire_time_wait(trio.current_time()))

    def _close_listener(self, listener: Listener) -> None:
        dropped = self._core.close_listener(listener._core, trio.current_time())
        self._listeners.pop(listener._core, None)
        for core in dropped:
            conn = self._conns.get(core)
            if conn is not None:
                conn._notify()

    def _send_many(self, datagrams: list[bytes], remote: Address) -> list[bytes]:
        """Send without blocking; return what the socket could not take.

        With GSO, each run of equal-sized datagrams (plus one shorter tail)
        goes out in one ``sendmsg``.
        """
        if self._pcap is not None:
            stamp = time.time()
            for d in datagrams:
                self._pcap.write_segment(stamp, self._local, remote, d)
        counters = self._core.counters
        sendto = self._sock.sendto
        n = len(datagrams)
        i = 0
        while i < n:
            d = datagrams[i]
            j = i + 1
            if self._gso and j < n:
                size = len(d)
                total = size
                while (
                    j < n
                    and j - i < _udp.MAX_GSO_SEGMENTS
                    and total + len(datagrams[j]) <= _udp.MAX_GSO_BYTES
                ):
                    nxt = len(datagrams[j])
                    if nxt > size:
                        break
                    total += nxt
                    j += 1
                    if nxt < size:
                        break  # a shorter datagram can only end a run
            try:
                if j - i > 1:
                    self._sock.sendmsg([b"".join(datagrams[i:j])], _udp.gso_cmsg(len(d)), 0, remote)
                    counters["OutGsoSends"] += 1
                else:
                    sendto(d, remote)
            except BlockingIOError:
                counters["OutSegs"] += i
                return datagrams[i:]
            except OSError as exc:
                if j - i > 1 and exc.errno in _GSO_ERRORS:
                    self._gso = False  # the kernel or device refuses: fall back for good
                    counters["GsoDisabled"] += 1
                    continue
                counters["OutErrs"] += 1
            i = j
        counters["OutSegs"] += n
        return []

    async def _wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self._sock)

    async def _receive_loop(self) -> None:
        sock = self._sock
        core = self._core
        conns = self._conns
        recvfrom = sock.recvfrom
        recvmsg = sock.recvmsg
        gro = self._gro
        cmsg_space = _udp.GRO_CMSG_SPACE
        while True:
            await trio.lowlevel.wait_readable(sock)
            now = trio.current_time()
            touched: set[TcpConnection] = set()
            for _ in range(1024):
                try:
                    if gro:
                        data, anc, _flags, addr = recvmsg(_RECV_SIZE, cmsg_space)
                    else:
                        data, addr = recvfrom(_RECV_SIZE)
                except BlockingIOError:
                    break
                except OSError:
                    # e.g. ICMP port unreachable reported on a UDP socket: TCP's own
                    # timers deal with the silence.
                    core.counters["InIcmpErrs"] += 1
                    continue
                remote = (addr[0], addr[1])
                size = _udp.gro_size(anc) if gro and anc else 0
                if size and len(data) > size:
                    core.counters["InGroBatches"] += 1
                    parts = [data[k : k + size] for k in range(0, len(data), size)]
                else:
                    parts = [data]
                for part in parts:
                    if self._pcap is not None:
                        self._pcap.write_segment(time.time(), addr, self._local, part)
                    hit = core.receive(part, remote, now)
                    if hit is not None:
                        touched.add(hit)
            if core.outbox:
                for d, remote in core.outbox:
                    self._send_many([d], remote)
                core.outbox.clear()
            if core.new_connections:
                for c in core.new_connections:
                    key = core.keys.get(c)
                    if key is not None and c.state is not State.CLOSED:
                        self._adopt(c, key[0])
                core.new_connections.clear()
            for c in touched:
                conn = conns.get(c)
                if conn is not None:
                    if c.options.keepalive:
                        c.start_keepalive(now)
                    conn._notify()
            if core.tw_closed:
                self._end_time_wait(core.tw_closed)
                core.tw_closed.clear()
            if core.accept_ready:
                for lc in core.accept_ready:
                    listener = self._listeners.get(lc)
                    if listener is not None:
                        listener._lot.unpark_all()
                core.accept_ready.clear()

    async def _shutdown(self, graceful: bool) -> None:
        """Close listeners, finish or reset connections, in bounded time."""
        self._closing = True
        for listener in list(self._listeners.values()):
            await listener.aclose()
        now = trio.current_time()
        for conn in list(self._conns.values()):
            if graceful and conn._core.state is not State.SYN_SENT:
                if not conn._closed:
                    conn._closed = True
                    conn._core.close(now)
            else:
                conn._closed = True
                conn._core.abort(now)
            conn._notify()
        if graceful:
            # Give FINs and queued data close_timeout to be acknowledged.
            with trio.move_on_after(self.options.close_timeout):
                while any(
                    c._core.state not in (State.CLOSED, State.TIME_WAIT, State.FIN_WAIT_2)
                    for c in self._conns.values()
                ):
                    await self._idle_lot.park()
        # TIME_WAIT records go away with the socket: their connections are CLOSED.
        self._core.time_wait.clear()
        self._end_time_wait(list(self._tw_conns.keys()))
        for conn in list(self._conns.values()):
            # Whatever is not finished is reset, FIN_WAIT_2 included, so the peer is
            # not left retransmitting its FIN to a socket that is gone. A peer that
            # already received our FIN still reads b"" (EOF) first, as on Linux.
            # TIME_WAIT entries are simply dropped with the socket they guarded.
            if conn._core.state is State.TIME_WAIT:
                conn._core.finish_time_wait()
            elif conn._core.state is not State.CLOSED:
                conn._core.abort(trio.current_time())
            conn._flush()
        self._closed = True


@asynccontextmanager
async def open_endpoint(
    local_address: tuple[str, int] = ("127.0.0.1", 0),
    *,
    rng: random.Random | None = None,
    pcap: str | os.PathLike[str] | BinaryIO | None = None,
    offload: bool | None = None,
    **options: Any,
) -> AsyncIterator[Endpoint]:
    """Bind a UDP socket at ``local_address`` and run a utcp endpoint on it.

    Keyword options become the endpoint-wide defaults (see ``docs/options.md``).
    The endpoint's receive loop and one task per connection live in the
    context's own nursery.  Leaving the block closes listeners, lets
    connections the application did not close finish gracefully for up to
    ``close_timeout`` seconds, then resets what is left and drops TIME_WAIT
    entries.  ``rng`` seeds ephemeral port choice (for reproducible tests).

    ``pcap`` (a path or a binary file) records every segment sent and received
    as a libpcap capture that Wireshark and tshark show as TCP (see
    ``docs/captures.md``); a path is closed with the endpoint, a file object is
    only flushed.

    ``offload`` controls Linux UDP GSO/GRO batching: ``None`` (default) uses
    them when the kernel supports them, ``False`` sends and receives one
    datagram per system call.
    """
    host, port = _split_address(local_address)
    opts = Options().replace(**options)
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        infos = await trio.socket.getaddrinfo(host, port, 0, _stdsocket.SOCK_DGRAM)
        if not infos:
            raise OSError(errno.EADDRNOTAVAIL, f"cannot resolve {host!r}") from None
        ip = ipaddress.ip_address(str(infos[0][4][0]))
        host = str(infos[0][4][0])
    family = _stdsocket.AF_INET6 if ip.version == 6 else _stdsocket.AF_INET
    writer = PcapWriter(pcap) if pcap is not None else None
    sock = _stdsocket.socket(family, _stdsocket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        _udp.set_buffers(sock, opts.udp_buffer)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot bind UDP {host}:{port}: {exc.strerror}") from None
        # The body's own exception is re-raised outside the nursery, so users
        # catch ConnectionRefusedError etc. directly, not inside an ExceptionGroup.
        body_error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            endpoint = Endpoint(sock, opts, nursery, rng=rng, pcap=writer, offload=offload)
            nursery.start_soon(endpoint._receive_loop, name="utcp-receive-loop")
            nursery.start_soon(endpoint._time_wait_reaper, name="utcp-time-wait")
            try:
                yield endpoint
            except BaseException as exc:
                body_error = exc
                with trio.CancelScope(shield=True):
                    await endpoint._shutdown(graceful=False)
            else:
                await endpoint._shutdown(graceful=True)
            finally:
                nursery.cancel_scope.cancel()
        if body_error is not None:
            try:
                raise body_error
            finally:
                body_error = None
    finally:
        sock.close()
        if writer is not None:
            writer.close()
