"""A Trio UDP relay that impairs traffic with :mod:`utcp.netem`.

The relay listens on one UDP socket.  Each new client address gets its own
upstream UDP socket (same address family as the forward address, ephemeral
port, connected to ``forward``) and its own pair of :class:`~utcp.netem.Link`
objects: datagrams from the client go through the client-to-server link and
out of the upstream socket; replies arriving on the upstream socket go
through the server-to-client link and back to the client from the listening
socket.

All timing uses trio's clock (``trio.current_time``/``trio.sleep_until``),
so the relay runs under :class:`trio.testing.MockClock`.  Blackout windows
are relative to the moment the relay started serving.

Memory is bounded: at most ``max_clients`` clients are tracked (the least
recently active one is evicted to make room for a new one) and each link
holds at most ``link_buffer`` bytes in flight.  Socket errors (for example
``ConnectionRefusedError`` after an ICMP port-unreachable) are counted, never
raised.

Example::

    async with open_relay(("127.0.0.1", 0), ("127.0.0.1", 9000),
                          c2s=Impairment(loss=0.1), s2c=Impairment(delay=0.05),
                          seed=1) as relay:
        print(relay.address, relay.stats)
"""

from __future__ import annotations

import hashlib
import math
import socket as _stdlib_socket
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from ._udp import set_buffers
from .netem import Impairment, Link, LinkStats

_SOCKET_BUFFER = 4 * 1024 * 1024

__all__ = [
    "ChaosRelay",
    "RelayStats",
    "derive_seed",
    "open_relay",
    "run_relay",
]

Address = tuple[str, int]
_SockAddr = Any  # (host, port) or (host, port, flowinfo, scope_id)

_MAX_DATAGRAM = 65536


def derive_seed(seed: int, index: int, direction: str) -> int:
    """The seed of client number ``index``'s link in ``direction`` ("c2s"/"s2c")."""
    digest = hashlib.sha256(f"utcp.chaos/{seed}/{index}/{direction}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass
class RelayStats:
    """A snapshot of a relay's counters.

    ``c2s`` and ``s2c`` aggregate the link stats of every client, including
    the ones already evicted.
    """

    clients: int = 0
    clients_total: int = 0
    clients_evicted: int = 0
    recv_errors: int = 0
    send_errors: int = 0
    c2s: LinkStats = field(default_factory=LinkStats)
    s2c: LinkStats = field(default_factory=LinkStats)

    def summary(self) -> str:
        """A one-line human-readable summary."""

        def one(name: str, s: LinkStats) -> str:
            return (
                f"{name}: in={s.submitted} out={s.delivered} lost={s.dropped_loss} "
                f"blackout={s.dropped_blackout} qdrop={s.dropped_queue} dup={s.duplicated} "
                f"reord={s.reordered} corrupt={s.corrupted}"
            )

        return (
            f"clients={self.clients} (total {self.clients_total}, evicted "
            f"{self.clients_evicted}) errors(recv={self.recv_errors} send={self.send_errors}) "
            f"| {one('c2s', self.c2s)} | {one('s2c', self.s2c)}"
        )


class _Direction:
    """A link plus the wake-up event of the task that drains it."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.wakeup = trio.Event()

    def submit(self, data: bytes) -> None:
        self.link.submit(data, trio.current_time())
        self.wakeup.set()


class _Client:
    def __init__(
        self,
        index: int,
        addr: _SockAddr,
        upstream: trio.socket.SocketType,
        c2s: Link,
        s2c: Link,
    ) -> None:
        self.index = index
        self.addr = addr
        self.upstream = upstream
        self.c2s = _Direction(c2s)
        self.s2c = _Direction(s2c)
        self.cancel_scope = trio.CancelScope()


async def _resolve(host: str, port: int, *, passive: bool) -> tuple[int, _SockAddr]:
    flags = _stdlib_socket.AI_PASSIVE if passive else 0
    try:
        infos = await trio.socket.getaddrinfo(
            host or None, port, type=_stdlib_socket.SOCK_DGRAM, flags=flags
        )
    except _stdlib_socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from None
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host!r}")
    family, _, _, _, sockaddr = infos[0]
    return int(family), sockaddr


class ChaosRelay:
    """An impairing UDP relay; see the module docstring.

    Construct it (no trio needed), then ``await relay.run()`` -- usually via
    ``nursery.start(relay.run)`` -- or use :func:`open_relay`.  After it has
    started, :attr:`address` is the bound listening address.
    """

    def __init__(
        self,
        listen: Address,
        forward: Address,
        *,
        c2s: Impairment | None = None,
        s2c: Impairment | None = None,
        seed: int = 0,
        max_clients: int = 1024,
        link_buffer: int = 1 << 20,
    ) -> None:
        """Configure the relay; nothing is bound until :meth:`run`."""
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients!r}")
        if link_buffer < 1:
            raise ValueError(f"link_buffer must be >= 1 byte, got {link_buffer!r}")
        self.listen = listen
        self.forward = forward
        self.c2s_impairment = c2s if c2s is not None else Impairment()
        self.s2c_impairment = s2c if s2c is not None else Impairment()
        self.seed = seed
        self.max_clients = max_clients
        self.link_buffer = link_buffer
        self._address: Address | None = None
        self._sock: trio.socket.SocketType | None = None
        self._forward_family = 0
        self._forward_addr: _SockAddr = None
        self._start = 0.0
        self._clients: OrderedDict[Any, _Client] = OrderedDict()
        self._next_index = 0
        self._evicted = 0
        self._recv_errors = 0
        self._send_errors = 0
        self._retired_c2s = LinkStats()
        self._retired_s2c = LinkStats()
        self._nursery: trio.Nursery | None = None

    @property
    def address(self) -> Address:
        """The bound listening address as ``(host, port)``."""
        if self._address is None:
            raise RuntimeError("the relay has not started yet")
        return self._address

    @property
    def stats(self) -> RelayStats:
        """A snapshot of the relay's counters."""
        c2s = self._retired_c2s
        s2c = self._retired_s2c
        for client in self._clients.values():
            c2s = c2s + client.c2s.link.stats
            s2c = s2c + client.s2c.link.stats
        return RelayStats(
            clients=len(self._clients),
            clients_total=self._next_index,
            clients_evicted=self._evicted,
            recv_errors=self._recv_errors,
            send_errors=self._send_errors,
            c2s=c2s,
            s2c=s2c,
        )

    async def run(
        self, *, task_status: trio.TaskStatus[ChaosRelay] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, report ``self`` through ``task_status``, and relay until cancelled.

        Resolution and bind errors (``OSError``) are raised before
        ``task_status.started`` is called.
        """
        if self._sock is not None:
            raise RuntimeError("a ChaosRelay can only run once")
        listen_family, listen_addr = await _resolve(*self.listen, passive=True)
        self._forward_family, self._forward_addr = await _resolve(*self.forward, passive=False)
        sock = trio.socket.socket(listen_family, _stdlib_socket.SOCK_DGRAM)
        set_buffers(sock, _SOCKET_BUFFER)  # bursts of a TCP window must not overflow the kernel
        try:
            try:
                await sock.bind(listen_addr)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"cannot bind to {self.listen[0]!r} port {self.listen[1]}: {exc.strerror}",
                ) from None
            bound = sock.getsockname()
            self._address = (str(bound[0]), int(bound[1]))
            self._sock = sock
            self._start = trio.current_time()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(self)
                await self._serve_listen(sock)
        finally:
            for client in list(self._clients.values()):
                self._retire(client)
            sock.close()

    # -- client bookkeeping ----------------------------------------------

    def _new_client(self, addr: _SockAddr) -> _Client:
        assert self._nursery is not None
        while len(self._clients) >= self.max_clients:
            _, oldest = self._clients.popitem(last=False)
            self._retire(oldest)
            self._evicted += 1
        index = self._next_index
        self._next_index += 1
        upstream = trio.socket.socket(self._forward_family, _stdlib_socket.SOCK_DGRAM)
        set_buffers(upstream, _SOCKET_BUFFER)

        def link(imp: Impairment, direction: str) -> Link:
            return Link(
                imp,
                derive_seed(self.seed, index, direction),
                start=self._start,
                max_pending_bytes=self.link_buffer,
            )

        client = _Client(
            index,
            addr,
            upstream,
            link(self.c2s_impairment, "c2s"),
            link(self.s2c_impairment, "s2c"),
        )
        self._clients[addr] = client
        self._nursery.start_soon(self._client_main, client)
        return client

    def _retire(self, client: _Client) -> None:
        client.cancel_scope.cancel()
        client.upstream.close()
        self._retired_c2s = self._retired_c2s + client.c2s.link.stats
        self._retired_s2c = self._retired_s2c + client.s2c.link.stats
        self._clients.pop(client.addr, None)

    async def _client_main(self, client: _Client) -> None:
        with client.cancel_scope:
            try:
                await client.upstream.connect(self._forward_addr)
            except OSError:
                self._send_errors += 1
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._serve_upstream, client)
                nursery.start_soon(self._pump, client.c2s, self._send_upstream, client)
                nursery.start_soon(self._pump, client.s2c, self._send_to_client, client)

    # -- receiving -------------------------------------------------------

    async def _serve_listen(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, addr = await sock.recvfrom(_MAX_DATAGRAM)
            except trio.ClosedResourceError:
                return
            except OSError:
                self._recv_errors += 1
                continue
            client = self._clients.get(addr)
            if client is None:
                client = self._new_client(addr)
            else:
                self._clients.move_to_end(addr)
            client.c2s.submit(data)

    async def _serve_upstream(self, client: _Client) -> None:
        while True:
            try:
                data = await client.upstream.recv(_MAX_DATAGRAM)
            except trio.ClosedResourceError:
                return
            except OSError:
                self._recv_errors += 1
                continue
            client.s2c.submit(data)

    # -- delivering ------------------------------------------------------

    async def _pump(
        self,
        direction: _Direction,
        send: Callable[[_Client, bytes], Awaitable[None]],
        client: _Client,
    ) -> None:
        link = direction.link
        while True:
            for data in link.pop_due(trio.current_time()):
                await send(client, data)
            deadline = link.next_deadline()
            direction.wakeup = trio.Event()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await direction.wakeup.wait()

    async def _send_upstream(self, client: _Client, data: bytes) -> None:
        try:
            await client.upstream.send(data)
        except (OSError, trio.ClosedResourceError):
            self._send_errors += 1

    async def _send_to_client(self, client: _Client, data: bytes) -> None:
        sock = self._sock
        assert sock is not None
        try:
            await sock.sendto(data, client.addr)
        except (OSError, trio.ClosedResourceError):
            self._send_errors += 1


async def run_relay(
    listen: Address,
    forward: Address,
    *,
    c2s: Impairment,
    s2c: Impairment,
    seed: int,
    max_clients: int = 1024,
    link_buffer: int = 1 << 20,
    task_status: trio.TaskStatus[ChaosRelay] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a :class:`ChaosRelay` until cancelled.

    With ``await nursery.start(run_relay, ...)`` (use ``functools.partial``
    for the keyword arguments) the started value is the relay object.
    """
    relay = ChaosRelay(
        listen,
        forward,
        c2s=c2s,
        s2c=s2c,
        seed=seed,
        max_clients=max_clients,
        link_buffer=link_buffer,
    )
    await relay.run(task_status=task_status)


@asynccontextmanager
async def open_relay(
    listen: Address,
    forward: Address,
    *,
    c2s: Impairment | None = None,
    s2c: Impairment | None = None,
    seed: int = 0,
    max_clients: int = 1024,
    link_buffer: int = 1 << 20,
) -> AsyncIterator[ChaosRelay]:
    """Run a relay in the background for the duration of the ``async with``.

    Yields the started :class:`ChaosRelay` (see ``.address`` and ``.stats``);
    the relay is cancelled when the block exits.
    """
    relay = ChaosRelay(
        listen,
        forward,
        c2s=c2s,
        s2c=s2c,
        seed=seed,
        max_clients=max_clients,
        link_buffer=link_buffer,
    )
    # Errors are re-raised outside the nursery, so callers catch OSError,
    # TimeoutError... themselves rather than inside an ExceptionGroup.
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(relay.run)
        except BaseException as exc:
            error = exc
        if error is None:
            try:
                yield relay
            except BaseException as exc:
                error = exc
        nursery.cancel_scope.cancel()
    if error is not None:
        try:
            raise error
        finally:
            error = None
