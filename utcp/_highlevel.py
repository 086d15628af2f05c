"""High-level helpers: utcp's counterparts of Trio's TCP conveniences.

================================  ==========================================
Trio (kernel TCP)                 utcp (TCP over UDP)
================================  ==========================================
``trio.serve_tcp``                :func:`serve`
``trio.open_tcp_stream``          :func:`open_stream` (``async with``)
``trio.open_tcp_listeners``       :func:`open_listeners` (``async with``)
================================  ==========================================

Design decision: structured concurrency all the way down
---------------------------------------------------------

With kernel TCP, the protocol runs in the kernel, so ``trio.open_tcp_stream``
can be a plain ``await`` that returns a socket stream: nothing has to keep
running in the background on the program's behalf.  utcp runs TCP in the
program itself.  Every endpoint has a receive loop task and one task per
connection (timers, retransmissions, TIME_WAIT), and in Trio a task must
live in a nursery that some ``async with`` block owns.  A plain ``await``
that returns a connection would have to start those tasks in a nursery
nobody owns (a hidden global event loop thread, or tasks that silently
outlive the caller), which is exactly what structured concurrency rules
out.

So the helpers that hand out connections or listeners are async context
managers: the ``async with`` block *is* the endpoint's lifetime, and
leaving it closes the connection gracefully, then the endpoint.
:func:`serve` never returns, so it can own its endpoint itself and is used
like ``trio.serve_tcp``: ``await nursery.start(utcp.serve, handler, 0)``.
Writing ``await utcp.open_stream(...)`` by mistake raises a
:class:`TypeError` that says to use ``async with``.

The errors are those of :class:`~utcp.Endpoint`: ``ConnectionRefusedError``
when the peer answers with RST, ``TimeoutError`` when the SYN is never
answered, ``OSError`` for bind and resolution failures, and ``ValueError`` /
``TypeError`` for bad arguments.
"""

from __future__ import annotations

import errno
import ipaddress
import socket as _stdsocket
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Generic, NoReturn, TypeVar

import trio

from ._connection import Connection
from ._core.config import Options
from ._core.state import State
from ._endpoint import Endpoint, Listener, open_endpoint

__all__ = ["open_listeners", "open_stream", "serve"]

T = TypeVar("T")

Handler = Callable[[Connection], Awaitable[object]]

#: How long one connection attempt runs alone before the next address is also
#: tried (RFC 8305 "Happy Eyeballs", as ``trio.open_tcp_stream``).
HAPPY_EYEBALLS_DELAY = 0.25

# A connection in these states has nothing left to say or hear.
_FINISHED = (State.TIME_WAIT, State.CLOSED)

# bind() errors meaning "this machine has no such address family/address".
_UNAVAILABLE = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT}


class AsyncWithOnly(AbstractAsyncContextManager[T], Generic[T]):
    """An async context manager that explains itself when awaited by mistake."""

    def __init__(self, cm: AbstractAsyncContextManager[T], name: str) -> None:
        self._cm = cm
        self._name = name

    async def __aenter__(self) -> T:
        return await self._cm.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._cm.__aexit__(exc_type, exc, tb)

    def __await__(self) -> Generator[Any, None, NoReturn]:
        raise TypeError(
            f"utcp.{self._name}() is an async context manager: write "
            f"'async with utcp.{self._name}(...) as ...:'. The block owns the "
            "endpoint's background tasks (structured concurrency; see docs/highlevel.md)."
        )
        yield  # pragma: no cover - makes this a generator


# -- argument checks -----------------------------------------------------


def _check_port(port: object, *, allow_zero: bool) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port must be in {low}..65535, got {port}")
    return port


def _check_host(host: object, what: str = "host") -> str:
    if not isinstance(host, str):
        raise TypeError(f"{what} must be a str, not {type(host).__name__}")
    if not host:
        raise ValueError(f"{what} must not be empty")
    return host


def _literal(host: str) -> str | None:
    """The canonical text of an IP literal (scope kept), or None for a name."""
    addr, sep, scope = host.partition("%")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    return ip.compressed + sep + scope


def _family(address: str) -> int:
    return _stdsocket.AF_INET6 if ":" in address else _stdsocket.AF_INET


async def _resolve(host: str, port: int, *, passive: bool, family: int = 0) -> list[str]:
    """The distinct addresses of ``host``, in getaddrinfo's order."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = await trio.socket.getaddrinfo(
            host,
            port,
            family,
            _stdsocket.SOCK_DGRAM,
            0,
            _stdsocket.AI_PASSIVE if passive else 0,
        )
    except _stdsocket.gaierror as exc:
        raise OSError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from None
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OSError(errno.EADDRNOTAVAIL, f"no address for {host!r}")
    return addresses


def _best_error(errors: list[BaseException]) -> BaseException:
    """The error to raise when every connection attempt failed."""
    for exc in errors:
        if not isinstance(exc, OSError):
            return exc  # a bug or a bad argument: never hide it
    for exc in errors:
        if isinstance(exc, ConnectionRefusedError):
            return exc  # a definite answer beats silence
    return errors[0]


# -- open_stream --------------------------------------------------------------


async def _connect_any(attempts: list[tuple[Endpoint, tuple[str, int]]], port: int) -> Connection:
    """Connect to the first address that answers, staggering the attempts."""
    if len(attempts) == 1:
        endpoint, remote = attempts[0]
        return await endpoint.connect(remote, port)
    winner: Connection | None = None
    errors: list[BaseException] = []

    async def attempt(
        endpoint: Endpoint, remote: tuple[str, int], failed: trio.Event, scope: trio.CancelScope
    ) -> None:
        nonlocal winner
        try:
            conn = await endpoint.connect(remote, port)
        except Exception as exc:
            errors.append(exc)
            failed.set()
            return
        if winner is None:
            winner = conn
            scope.cancel()
        else:  # pragma: no cover - two attempts completing in the same tick
            conn.abort()

    async with trio.open_nursery() as nursery:
        for endpoint, remote in attempts:
            failed = trio.Event()
            nursery.start_soon(attempt, endpoint, remote, failed, nursery.cancel_scope)
            with trio.move_on_after(HAPPY_EYEBALLS_DELAY):
                await failed.wait()
    if winner is not None:
        return winner
    raise _best_error(errors)


@asynccontextmanager
async def _open_stream(
    host: str, port: int, vport: int | None, local_host: str | None, options: dict[str, Any]
) -> AsyncIterator[Connection]:
    _check_host(host)
    _check_port(port, allow_zero=False)
    if vport is not None:
        _check_port(vport, allow_zero=False)
    if local_host is not None:
        _check_host(local_host, "local_host")
    # Bad options fail before any socket is made.
    close_timeout = Options().replace(**options).close_timeout
    async with AsyncExitStack() as stack:
        if local_host is not None:
            endpoint = await stack.enter_async_context(open_endpoint((local_host, 0), **options))
            family = _family(endpoint.local_address[0])
            remotes = await _resolve(host, port, passive=False, family=family)
            attempts = [(endpoint, (r, port)) for r in remotes]
        else:
            remotes = await _resolve(host, port, passive=False)
            endpoints: dict[int, Endpoint | None] = {}
            attempts = []
            first_error: OSError | None = None
            for remote in remotes:
                family = _family(remote)
                if family not in endpoints:
                    wildcard = "::" if family == _stdsocket.AF_INET6 else "0.0.0.0"
                    try:
                        endpoints[family] = await stack.enter_async_context(
                            open_endpoint((wildcard, 0), **options)
                        )
                    except OSError as exc:
                        if exc.errno not in _UNAVAILABLE:
                            raise
                        first_error = first_error or exc
                        endpoints[family] = None
                ep = endpoints[family]
                if ep is not None:
                    attempts.append((ep, (remote, port)))
            if not attempts:
                assert first_error is not None
                raise first_error
        conn = await _connect_any(attempts, port if vport is None else vport)
        yield conn
        await conn.close()
        # Like a kernel socket after close(2), let the server finish its side:
        # wait (bounded) for its FIN, so that ours is not the last word of an
        # endpoint that is about to disappear.
        with trio.move_on_after(close_timeout):
            await conn._wait_for(lambda: conn.state in _FINISHED)


def open_stream(
    host: str,
    port: int,
    *,
    vport: int | None = None,
    local_host: str | None = None,
    **options: Any,
) -> AsyncWithOnly[Connection]:
    """Connect to a utcp server, like ``trio.open_tcp_stream``, as ``async with``.

    ::

        async with utcp.open_stream("127.0.0.1", 4000) as stream:
            await stream.send_all(b"hello")

    ``host`` is a name or an IP address; ``port`` is the server's UDP port and,
    unless ``vport`` says otherwise, the virtual port connected to (they
    differ behind a relay such as ``python -m utcp chaos``).  The stream owns a private endpoint
    bound to an ephemeral UDP port on ``local_host`` (default: the wildcard
    address of the remote address's family).  When ``host`` resolves to
    several addresses they are tried in turn, each getting a head start of
    0.25 s (Happy Eyeballs), and the first to complete the handshake wins.
    Keyword ``options`` are endpoint options (``keepalive=True``,
    ``nodelay=True``, ``syn_retries=2``...).

    Leaving the block closes the connection gracefully and waits, at most
    ``close_timeout`` seconds (default 5), for the server to close its side
    too (a kernel would go on with the close in the background, but this
    endpoint is about to disappear); then it closes the endpoint.  Leaving
    it with an exception resets the connection at once.  Raises
    ``ConnectionRefusedError``, ``TimeoutError`` or ``OSError`` if the
    connection cannot be made, ``ValueError`` / ``TypeError`` for bad arguments.
    """
    return AsyncWithOnly(_open_stream(host, port, vport, local_host, options), "open_stream")


# -- open_listeners -----------------------------------------------------------


@asynccontextmanager
async def _open_listeners(
    port: int, host: str | None, backlog: int | None, options: dict[str, Any]
) -> AsyncIterator[list[Listener]]:
    _check_port(port, allow_zero=True)
    if host is not None and not isinstance(host, str):
        raise TypeError(f"host must be a str or None, not {type(host).__name__}")
    if backlog is not None:
        if isinstance(backlog, bool) or not isinstance(backlog, int):
            raise TypeError(f"backlog must be an int, not {type(backlog).__name__}")
        options = {**options, "backlog": backlog}
    Options().replace(**options)
    optional = host is None  # the loopbacks: skip a family the machine lacks
    if host is None:
        addresses = ["127.0.0.1", "::1"]
    elif host == "":
        addresses = ["0.0.0.0"]
    else:
        addresses = await _resolve(host, port, passive=True)
    async with AsyncExitStack() as stack:
        listeners: list[Listener] = []
        chosen = port
        for address in addresses:
            endpoint: Endpoint | None = None
            candidates = [chosen] if chosen == port else [chosen, 0]
            for i, candidate in enumerate(candidates):
                try:
                    endpoint = await stack.enter_async_context(
                        open_endpoint((address, candidate), **options)
                    )
                    break
                except OSError as exc:
                    last = i == len(candidates) - 1
                    if exc.errno == errno.EADDRINUSE and not last:
                        continue  # port 0: the first listener's port is taken here
                    if optional and address == "::1" and exc.errno in _UNAVAILABLE:
                        break  # no IPv6 loopback on this machine
                    raise
            if endpoint is None:
                continue
            if chosen == 0:
                chosen = endpoint.local_address[1]
            listeners.append(endpoint.listen())
        if not listeners:  # pragma: no cover - no loopback at all
            raise OSError(errno.EADDRNOTAVAIL, "no loopback address could be bound")
        yield listeners


def open_listeners(
    port: int, *, host: str | None = "127.0.0.1", backlog: int | None = None, **options: Any
) -> AsyncWithOnly[list[Listener]]:
    """Listen on ``port``, like ``trio.open_tcp_listeners``, as ``async with``.

    ::

        async with utcp.open_listeners(0) as listeners:
            print(listeners[0].local_address)
            await trio.serve_listeners(handler, listeners)

    Each address gets its own endpoint (UDP socket) bound to ``(address,
    port)`` and one :class:`~utcp.Listener` on the virtual port with the same
    number.  ``host`` is an address or a name (every address it resolves to),
    ``""`` for all IPv4 interfaces, or ``None`` for both loopbacks,
    ``127.0.0.1`` and ``::1`` (the latter only where the machine has IPv6).
    With ``port=0`` the first endpoint gets an ephemeral port and the others
    try to bind the same number.  ``backlog`` and ``options`` are endpoint
    options.  Leaving the block closes the listeners and the endpoints (which
    close the connections they accepted).
    """
    return AsyncWithOnly(_open_listeners(port, host, backlog, options), "open_listeners")


# -- serve --------------------------------------------------------------------


async def serve(
    handler: Handler,
    port: int,
    *,
    host: str | None = "127.0.0.1",
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[Listener]] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> NoReturn:
    """Serve ``handler(connection)`` for every connection to ``port``, forever.

    The counterpart of ``trio.serve_tcp``::

        listeners = await nursery.start(utcp.serve, handler, 0)
        host, port = listeners[0].local_address

    Opens endpoints bound to ``(host, port)`` as :func:`open_listeners` does
    (same ``host`` rules and ``options``), reports the list of listeners
    through ``task_status``, and runs :func:`trio.serve_listeners`: each
    connection gets its own task running ``handler``, and is closed
    (gracefully, or reset if unread data is left) when the handler returns.
    Cancel the surrounding scope to stop; the endpoints then close, which
    also resets connections handlers still hold, even when ``handler_nursery``
    is a nursery of the caller's.
    """
    if not callable(handler):
        raise TypeError(f"handler must be an async function, not {type(handler).__name__}")
    async with open_listeners(port, host=host, **options) as listeners:
        await trio.serve_listeners(
            handler, listeners, handler_nursery=handler_nursery, task_status=task_status
        )
    raise AssertionError("unreachable")  # pragma: no cover
