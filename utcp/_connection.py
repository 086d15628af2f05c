"""The public :class:`Connection`: a Trio stream over one core connection.

Each connection runs in its own Trio task (:meth:`Connection._run`) that
flushes the core's outbox, sleeps until the next timer deadline or a
wake-up, and fires timers, so ACKs, retransmissions and TIME_WAIT proceed
while the application does something else.  Application calls (``send``,
``recv``...) drive the core directly and wake that task when its deadline
may have moved.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ._core.connection import TcpConnection
from ._core.endpoint import Address
from ._core.state import State

if TYPE_CHECKING:
    from ._endpoint import Endpoint

__all__ = ["Connection"]

#: Silent unless the application configures logging: state changes (DEBUG),
#: retransmissions (DEBUG), resets and timeouts (INFO), with the 4-tuple.
logger = logging.getLogger("utcp")
logger.addHandler(logging.NullHandler())

_DEFAULT_RECEIVE = 65536


class Connection(trio.abc.HalfCloseableStream):
    """A TCP connection over utcp.

    It is a :class:`trio.abc.HalfCloseableStream` (``send_all``,
    ``receive_some``, ``send_eof``, ``aclose``) and also offers the socket
    verbs ``send``, ``recv``, ``shutdown``, ``close`` and ``abort``.  The socket
    verbs raise the ``OSError`` a socket user expects
    (``ConnectionResetError``, ``TimeoutError``...); the stream methods raise
    :class:`trio.BrokenResourceError` with that ``OSError`` as ``__cause__``.
    Using a connection after :meth:`close` raises
    :class:`trio.ClosedResourceError`.
    """

    def __init__(self, endpoint: Endpoint, core: TcpConnection, remote: Address) -> None:
        self._endpoint = endpoint
        self._core = core
        self._remote = remote
        self._task_lot = trio.lowlevel.ParkingLot()
        self._app_lot = trio.lowlevel.ParkingLot()
        self._wake_pending = False
        self._sleep_until = math.inf
        self._sleep_scope: trio.CancelScope | None = None
        self._closed = False  # the application called close()/aclose()/abort()
        self._sending = False
        self._receiving = False
        self._done = trio.Event()  # the core reached CLOSED and the task ended
        self._blocked: list[bytes] = []
        self._logged_state = core.state
        self._logged_rtx = 0

    # ------------------------------------------------------------------
    # Properties

    @property
    def state(self) -> State:
        """The connection's :class:`utcp.State`."""
        return self._core.state

    @property
    def local_address(self) -> tuple[str, int]:
        """The endpoint's bound UDP ``(host, port)``."""
        return self._endpoint.local_address

    @property
    def remote_address(self) -> tuple[str, int]:
        """The peer's UDP ``(host, port)``."""
        return self._remote

    @property
    def local_port(self) -> int:
        """This side's virtual TCP port."""
        return self._core.local_port

    @property
    def remote_port(self) -> int:
        """The peer's virtual TCP port."""
        return self._core.remote_port

    def info(self) -> dict[str, Any]:
        """A TCP_INFO-like snapshot: state, srtt, rttvar, rto, cwnd, windows, counters."""
        d = self._core.info()
        d.update(
            local_address=self.local_address,
            remote_address=self._remote,
            local_port=self.local_port,
            remote_port=self.remote_port,
        )
        return d

    def __repr__(self) -> str:
        return (
            f"<utcp.Connection {self.local_address[0]}:{self.local_address[1]}/{self.local_port}"
            f" -> {self._remote[0]}:{self._remote[1]}/{self.remote_port} {self.state}>"
        )

    # ------------------------------------------------------------------
    # Plumbing between the core, the socket and the tasks

    def _flush(self) -> None:
        """Send everything in the core's outbox without blocking."""
        if self._blocked:
            self._blocked.extend(self._core.take_datagrams())
            self._wake()
            return
        out = self._core.take_datagrams()
        if out:
            rest = self._endpoint._send_many(out, self._remote)
            if rest:
                self._blocked = rest
                self._wake()

    def _wake(self) -> None:
        """Ask the connection task to run another pass."""
        self._wake_pending = True
        self._task_lot.unpark_all()

    def _log_changes(self) -> None:
        core = self._core
        if core.state is not self._logged_state:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s: %s -> %s", self._tuple(), self._logged_state, core.state)
            if core.error is not None:
                logger.info("%s: %s", self._tuple(), core.error)
            self._logged_state = core.state
        if core.total_retransmits != self._logged_rtx:
            if logger.isEnabledFor(logging.DEBUG):
                info = core.info()
                logger.debug(
                    "%s: retransmission #%d (rto %.3fs, cwnd %d)",
                    self._tuple(),
                    core.total_retransmits,
                    info["rto"],
                    info["cwnd"],
                )
            self._logged_rtx = core.total_retransmits

    def _tuple(self) -> str:
        lh, lp = self._endpoint.local_address
        return f"{lh}:{lp}/{self._core.local_port}<->{self._remote[0]}:{self._remote[1]}/{self._core.remote_port}"

    def _notify(self) -> None:
        """After any core input: flush, wake app waiters, re-arm the task if needed."""
        if self._core.state is not self._logged_state or (
            self._core.total_retransmits != self._logged_rtx
        ):
            self._log_changes()
        self._flush()
        if self._app_lot:
            self._app_lot.unpark_all()
        if self._endpoint._closing:
            self._endpoint._idle_lot.unpark_all()
        st = self._core.state
        if st is State.CLOSED or st is State.TIME_WAIT:
            self._wake()
            return
        deadline = self._core.get_timer()
        if deadline is not None and deadline < self._sleep_until:
            scope = self._sleep_scope
            if scope is not None:
                # Move the sleeping task's alarm earlier instead of waking it:
                # no task switch per segment for delayed-ACK or RTO timers.
                scope.deadline = deadline
                self._sleep_until = deadline
            else:
                self._wake()

    async def _run(self) -> None:
        """The connection's own task: timers, blocked sends, and cleanup."""
        core = self._core
        try:
            while True:
                if self._blocked:
                    await self._endpoint._wait_writable()
                    self._blocked = self._endpoint._send_many(self._blocked, self._remote)
                    if self._blocked:
                        continue
                self._flush()
                if not self._blocked and self._endpoint._settle(self):
                    break
                if self._wake_pending:
                    self._wake_pending = False
                    await trio.lowlevel.checkpoint()
                    continue
                deadline = core.get_timer()
                self._sleep_until = math.inf if deadline is None else deadline
                with trio.move_on_at(self._sleep_until) as scope:
                    self._sleep_scope = scope
                    await self._task_lot.park()
                self._sleep_scope = None
                self._sleep_until = math.inf
                self._wake_pending = False
                now = trio.current_time()
                deadline = core.get_timer()
                if deadline is not None and now >= deadline:
                    core.handle_timer(now)
                    self._notify()
        finally:
            self._endpoint._forget(self)
            if core.state is not State.TIME_WAIT:
                self._done.set()
            self._app_lot.unpark_all()

    async def _wait_for(self, ready: Callable[[], bool]) -> bool:
        """Block until ``ready()`` is true (checked after every core event).

        Returns whether it had to wait: parking is a full checkpoint, so a caller
        that waited need not add another (one task switch less per message).
        """
        waited = False
        while not ready():
            waited = True
            await self._app_lot.park()
        return waited

    # ------------------------------------------------------------------
    # Errors

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("connection was closed")

    def _failure(self) -> OSError:
        """The OSError describing why the connection can't be used, for socket verbs."""
        err = self._core.error
        if err is not None:
            return type(err)(*err.args)
        if self._core.state is State.CLOSED:
            return ConnectionResetError("connection is closed")
        return BrokenPipeError("sending side was shut down")

    # ------------------------------------------------------------------
    # Socket verbs

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data`` (like ``socket.sendall``); waits for buffer room.

        Raises ``BrokenPipeError`` after :meth:`shutdown`, the connection's
        error (``ConnectionResetError``, ``TimeoutError``) if it failed, and
        :class:`trio.ClosedResourceError` after :meth:`close`.
        """
        self._check_open()
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this connection")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            core = self._core
            view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
            total = len(view)
            off = 0
            waited = False
            while True:
                self._check_open()
                if not core.can_send:
                    raise self._failure()
                if off < total:
                    n = core.send(view[off:], trio.current_time())
                    off += n
                    if n:
                        self._notify()
                if off >= total:
                    break
                if await self._wait_for(
                    lambda: self._closed or not core.can_send or core.send_space > 0
                ):
                    waited = True
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def recv(self, max_bytes: int = _DEFAULT_RECEIVE) -> bytes:
        """Receive up to ``max_bytes``; ``b""`` means the peer sent FIN (end of stream).

        Raises the connection's error if it was reset or timed out, and
        :class:`trio.ClosedResourceError` after :meth:`close`.
        """
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool):
            raise TypeError("max_bytes must be an int")
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self._check_open()
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this connection")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            core = self._core
            waited = await self._wait_for(
                lambda: (
                    self._closed
                    or core.readable > 0
                    or core.fin_received
                    or core.state is State.CLOSED
                )
            )
            self._check_open()
            if core.readable:
                data = core.read(max_bytes, trio.current_time())
                if core.has_output:  # a window update: flush it (timers are unchanged)
                    self._notify()
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            if core.fin_received:
                # EOF once the peer's FIN arrived, even if a RST came after it
                # (Linux's tcp_recvmsg checks SOCK_DONE before the socket error).
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return b""
            raise self._failure()
        finally:
            self._receiving = False

    async def shutdown(self) -> None:
        """Half-close: send FIN after the queued data; receiving goes on until the peer's FIN."""
        self._check_open()
        core = self._core
        if core.error is not None:
            raise self._failure()
        core.shutdown(trio.current_time())
        self._notify()
        await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        """Graceful close, like ``close(2)``: FIN after queued data, then forget it.

        The endpoint finishes the close in the background (retransmitting the
        FIN, TIME_WAIT).  If received data was left unread, or ``linger=0``,
        the connection is reset instead (as Linux does).  Idempotent.
        """
        if not self._closed:
            self._closed = True
            self._core.close(trio.current_time())
            self._notify()
        await trio.lowlevel.checkpoint()

    def abort(self) -> None:
        """Reset the connection now: RST to the peer, no waiting."""
        self._closed = True
        self._core.abort(trio.current_time())
        self._notify()

    async def wait_closed(self) -> None:
        """Wait until the connection reached CLOSED (after TIME_WAIT, if any)."""
        await self._done.wait()

    # ------------------------------------------------------------------
    # trio.abc.HalfCloseableStream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """:meth:`trio.abc.SendStream.send_all`: like :meth:`send`, errors as BrokenResourceError.

        After :meth:`send_eof` (or :meth:`shutdown`) it raises
        :class:`trio.ClosedResourceError`, as the HalfCloseableStream contract says.
        """
        try:
            await self.send(data)
        except OSError as exc:
            if self._core.fin_queued and self._core.error is None:
                raise trio.ClosedResourceError(
                    "the sending side was closed with send_eof()"
                ) from exc
            raise trio.BrokenResourceError(str(exc)) from exc

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the send buffer has room (or the connection can't send at all)."""
        self._check_open()
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this connection")
        self._sending = True
        try:
            core = self._core
            await trio.lowlevel.checkpoint_if_cancelled()
            await self._wait_for(lambda: self._closed or not core.can_send or core.send_space > 0)
            self._check_open()
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """:meth:`trio.abc.ReceiveStream.receive_some`; ``b""`` at end of stream."""
        try:
            return await self.recv(_DEFAULT_RECEIVE if max_bytes is None else max_bytes)
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def send_eof(self) -> None:
        """:meth:`trio.abc.HalfCloseableStream.send_eof`: half-close (idempotent)."""
        self._check_open()
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this connection")
        core = self._core
        if core.error is not None:
            raise trio.BrokenResourceError(str(core.error)) from self._failure()
        core.shutdown(trio.current_time())
        self._notify()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """:meth:`trio.abc.AsyncResource.aclose`: a graceful :meth:`close`."""
        await self.close()
