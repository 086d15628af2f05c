"""utcp.serve / open_stream / open_listeners, and utcp in the wider Trio ecosystem.

Covers the high-level helpers (docs/highlevel.md), ``trio.serve_listeners``
with utcp listeners, TLS with ``trio.SSLStream`` over a utcp connection
(certificates from trustme), and a utcp connection used as an AnyIO byte
stream under AnyIO's Trio backend.  Everything runs on loopback; waits are
bounded with ``trio.fail_after``.
"""

from __future__ import annotations

import errno
import functools
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import pytest
import trio
import trustme
from anyio.streams.buffered import BufferedByteReceiveStream

import utcp
from utcp import State

from .conftest import HAVE_IPV6

DEADLINE = 10.0


async def echo(conn: utcp.Connection) -> None:
    """Echo until end of stream."""
    while data := await conn.receive_some():
        await conn.send_all(data)


async def roundtrip(stream: trio.abc.Stream, payload: bytes) -> bytes:
    """Send ``payload`` and read back as many bytes."""
    await stream.send_all(payload)
    got = b""
    with trio.fail_after(DEADLINE):
        while len(got) < len(payload):
            chunk = await stream.receive_some()
            assert chunk, "unexpected end of stream"
            got += chunk
    return got


def recording(
    handler: Callable[[utcp.Connection], Awaitable[None]], errors: list[BaseException]
) -> Callable[[utcp.Connection], Awaitable[None]]:
    """Wrap a handler so its exceptions are recorded instead of crashing the server."""

    async def wrapped(conn: utcp.Connection) -> None:
        try:
            await handler(conn)
        except Exception as exc:
            errors.append(exc)

    return wrapped


# -- serve / open_stream -------------------------------------------------------------


async def test_serve_and_open_stream() -> None:
    seen: list[bytes] = []

    async def handler(conn: utcp.Connection) -> None:
        assert isinstance(conn, utcp.Connection)
        while data := await conn.receive_some():
            seen.append(data)
            await conn.send_all(data.upper())
        seen.append(b"<eof>")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(utcp.serve, handler, 0)
        assert len(listeners) == 1 and isinstance(listeners[0], utcp.Listener)
        host, port = listeners[0].local_address
        assert host == "127.0.0.1" and port > 0 and listeners[0].port == port
        async with utcp.open_stream(host, port) as stream:
            assert isinstance(stream, utcp.Connection)
            assert isinstance(stream, trio.abc.HalfCloseableStream)
            assert stream.state is State.ESTABLISHED
            assert stream.remote_address == (host, port) and stream.remote_port == port
            assert await roundtrip(stream, b"hello") == b"HELLO"
        # Leaving the block closed the connection gracefully: the handler saw EOF.
        assert stream.state in (State.TIME_WAIT, State.CLOSED)
        with trio.fail_after(DEADLINE):
            while seen[-1:] != [b"<eof>"]:
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()


async def test_serve_with_handler_nursery_and_options() -> None:
    async with trio.open_nursery() as handlers, trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: utcp.serve(
                echo, 0, handler_nursery=handlers, task_status=task_status, nodelay=True, msl=1.0
            )
        )
        listener = listeners[0]
        assert listener._endpoint.options.nodelay is True  # options reach the endpoint
        async with utcp.open_stream(*listener.local_address, nodelay=True) as stream:
            assert await roundtrip(stream, b"x" * 100_000) == b"x" * 100_000
        nursery.cancel_scope.cancel()
        handlers.cancel_scope.cancel()


async def test_serve_reports_bind_and_argument_errors() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(utcp.serve, echo, 0)
        taken = listeners[0].local_address[1]
        with pytest.raises(OSError) as info:
            await nursery.start(utcp.serve, echo, taken)
        assert info.value.errno == errno.EADDRINUSE
        with pytest.raises(ValueError, match="port must be in 0..65535"):
            await nursery.start(utcp.serve, echo, 65536)
        with pytest.raises(TypeError, match="unknown option"):
            await nursery.start(functools.partial(utcp.serve, echo, 0, colour="blue"))
        with pytest.raises(ValueError, match="mtu"):
            await nursery.start(functools.partial(utcp.serve, echo, 0, mtu=10))
        nursery.cancel_scope.cancel()


async def test_open_stream_exit_waits_for_the_server_to_close_but_not_forever(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Leaving open_stream waits for the server's FIN, at most close_timeout seconds."""
    stop = trio.Event()

    async def stubborn(conn: utcp.Connection) -> None:
        assert await conn.receive_some() == b""  # EOF from the client...
        await stop.wait()  # ...but this server never closes its side

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(utcp.serve, stubborn, 0)
        start = trio.current_time()
        async with utcp.open_stream(*listeners[0].local_address, close_timeout=3.0):
            pass
        assert 3.0 <= trio.current_time() - start < 4.0
        stop.set()
        nursery.cancel_scope.cancel()


async def test_open_stream_refused() -> None:
    async with utcp.open_endpoint() as ep:  # a UDP socket that answers, but no listener
        with pytest.raises(ConnectionRefusedError):
            async with utcp.open_stream(*ep.local_address):
                pass  # pragma: no cover


async def test_open_stream_timeout(autojump_clock: trio.testing.MockClock) -> None:
    with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as sink:  # never answers
        await sink.bind(("127.0.0.1", 0))
        with pytest.raises(TimeoutError):
            async with utcp.open_stream(*sink.getsockname(), syn_retries=2):
                pass  # pragma: no cover


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("127.0.0.1", 0), {}, ValueError, "port must be in 1..65535"),
        (("127.0.0.1", 70000), {}, ValueError, "port must be in 1..65535"),
        (("127.0.0.1", "80"), {}, TypeError, "port must be an int"),
        (("127.0.0.1", True), {}, TypeError, "port must be an int"),
        ((None, 80), {}, TypeError, "host must be a str"),
        (("", 80), {}, ValueError, "host must not be empty"),
        (("127.0.0.1", 80), {"vport": 0}, ValueError, "port must be in 1..65535"),
        (("127.0.0.1", 80), {"colour": "blue"}, TypeError, "unknown option"),
        (("127.0.0.1", 80), {"keepalive_time": -1}, ValueError, "keepalive_time"),
        (("127.0.0.1", 80), {"local_host": 1}, TypeError, "local_host must be a str"),
        (("::1", 80), {"local_host": "127.0.0.1"}, ValueError, "AF_INET6 but the endpoint"),
    ],
)
async def test_open_stream_bad_arguments(
    args: tuple[Any, Any], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        async with utcp.open_stream(*args, **kwargs):
            pass  # pragma: no cover


async def test_await_instead_of_async_with_explains() -> None:
    with pytest.raises(TypeError, match="async with utcp.open_stream"):
        await utcp.open_stream("127.0.0.1", 80)  # type: ignore[misc]
    with pytest.raises(TypeError, match="async with utcp.open_listeners"):
        await utcp.open_listeners(0)  # type: ignore[misc]


async def test_open_stream_local_host_and_vport() -> None:
    async with utcp.open_endpoint() as server_ep:
        listener = server_ep.listen(4321)  # a virtual port unrelated to the UDP port
        async with utcp.open_stream(
            *server_ep.local_address, vport=4321, local_host="127.0.0.1"
        ) as stream:
            assert stream.local_address[0] == "127.0.0.1"
            assert stream.remote_port == 4321
            with trio.fail_after(DEADLINE):
                server = await listener.accept()
            await stream.send_all(b"ping")
            assert await server.receive_some() == b"ping"
            await server.aclose()


async def test_open_stream_exception_resets() -> None:
    errors: list[BaseException] = []
    accepted = trio.Event()
    done = trio.Event()

    async def handler(conn: utcp.Connection) -> None:
        accepted.set()
        try:
            await conn.receive_some()
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(utcp.serve, recording(handler, errors), 0)
        with pytest.raises(KeyError):
            async with utcp.open_stream(*listeners[0].local_address):
                with trio.fail_after(DEADLINE):
                    await accepted.wait()
                raise KeyError("boom")
        with trio.fail_after(DEADLINE):
            await done.wait()
        nursery.cancel_scope.cancel()
    [error] = errors
    assert isinstance(error, trio.BrokenResourceError)
    assert isinstance(error.__cause__, ConnectionResetError)


def fake_name(monkeypatch: pytest.MonkeyPatch, addresses: list[str]) -> None:
    """Make the name ``example.test`` resolve to ``addresses``, in that order."""
    from utcp import _highlevel

    real = _highlevel._resolve

    async def resolve(host: str, port: int, **kwargs: Any) -> list[str]:
        if host == "example.test":
            return addresses
        return await real(host, port, **kwargs)

    monkeypatch.setattr(_highlevel, "_resolve", resolve)


async def test_happy_eyeballs_moves_on_from_a_silent_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first address never answers; the second, tried 0.25 s later, wins."""
    from utcp import _highlevel

    fake_name(monkeypatch, ["127.0.0.2", "127.0.0.1"])  # nothing listens on 127.0.0.2
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(utcp.serve, echo, 0)
        port = listeners[0].local_address[1]
        start = trio.current_time()
        with trio.fail_after(DEADLINE):
            async with utcp.open_stream("example.test", port) as stream:
                assert stream.remote_address == ("127.0.0.1", port)
                assert await roundtrip(stream, b"hi") == b"hi"
        assert trio.current_time() - start >= _highlevel.HAPPY_EYEBALLS_DELAY
        nursery.cancel_scope.cancel()


async def test_happy_eyeballs_all_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every address refuses: the error is ConnectionRefusedError, not a group."""

    fake_name(monkeypatch, ["127.0.0.2", "127.0.0.1"])
    async with utcp.open_endpoint(("127.0.0.1", 0)) as a:
        port = a.local_address[1]
        async with utcp.open_endpoint(("127.0.0.2", port)):
            with trio.fail_after(DEADLINE), pytest.raises(ConnectionRefusedError):
                async with utcp.open_stream("example.test", port):
                    pass  # pragma: no cover


# -- open_listeners ------------------------------------------------------------------


async def test_open_listeners_default_host() -> None:
    async with utcp.open_listeners(0, backlog=7) as listeners:
        [listener] = listeners
        assert listener.local_address[0] == "127.0.0.1"
        assert listener.backlog == 7
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, echo, listeners)
            async with utcp.open_stream(*listener.local_address) as stream:
                assert await roundtrip(stream, b"one") == b"one"
            nursery.cancel_scope.cancel()


async def test_open_listeners_both_loopbacks() -> None:
    async with utcp.open_listeners(0, host=None) as listeners:
        hosts = [listener.local_address[0] for listener in listeners]
        assert hosts == (["127.0.0.1", "::1"] if HAVE_IPV6 else ["127.0.0.1"])
        assert len({listener.local_address[1] for listener in listeners}) == 1  # same port
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, echo, listeners)
            for listener in listeners:
                async with utcp.open_stream(*listener.local_address) as stream:
                    assert await roundtrip(stream, listener.local_address[0].encode()) == (
                        listener.local_address[0].encode()
                    )
            nursery.cancel_scope.cancel()


async def test_open_listeners_by_name() -> None:
    async with utcp.open_listeners(0, host="localhost") as listeners:
        assert listeners and all(ln.local_address[0] in ("127.0.0.1", "::1") for ln in listeners)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, echo, listeners)
            async with utcp.open_stream("localhost", listeners[0].local_address[1]) as stream:
                assert await roundtrip(stream, b"by name") == b"by name"
            nursery.cancel_scope.cancel()


async def test_open_listeners_errors() -> None:
    with pytest.raises(ValueError, match="port"):
        async with utcp.open_listeners(-1):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="backlog"):
        async with utcp.open_listeners(0, backlog="many"):  # type: ignore[arg-type]
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="host"):
        async with utcp.open_listeners(0, host=127):  # type: ignore[arg-type]
            pass  # pragma: no cover
    async with utcp.open_listeners(0) as listeners:
        with pytest.raises(OSError) as info:
            async with utcp.open_listeners(listeners[0].local_address[1]):
                pass  # pragma: no cover
        assert info.value.errno == errno.EADDRINUSE


async def test_serve_listeners_with_a_plain_endpoint_listener() -> None:
    """trio.serve_listeners takes any utcp.Listener, including one from Endpoint.listen."""
    async with utcp.open_endpoint() as ep, trio.open_nursery() as nursery:
        started = await nursery.start(trio.serve_listeners, echo, [ep.listen()])
        assert isinstance(started[0], trio.abc.Listener)
        async with utcp.open_stream(*ep.local_address) as stream:
            assert await roundtrip(stream, b"plain") == b"plain"
            await stream.send_eof()
            with trio.fail_after(DEADLINE):
                assert await stream.receive_some() == b""  # the handler returned: closed
        nursery.cancel_scope.cancel()


# -- TLS -------------------------------------------------------------------------------


async def test_tls_over_utcp() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("utcp.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    errors: list[BaseException] = []
    closed_cleanly = trio.Event()

    async def tls_echo(conn: utcp.Connection) -> None:
        tls = trio.SSLStream(conn, server_ctx, server_side=True)
        while data := await tls.receive_some():
            await tls.send_all(data)
        closed_cleanly.set()  # b"" from SSLStream: the client's close_notify arrived
        await tls.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(utcp.serve, recording(tls_echo, errors), 0)
        async with utcp.open_stream(*listeners[0].local_address) as conn:
            tls = trio.SSLStream(conn, client_ctx, server_hostname="utcp.test")
            with trio.fail_after(DEADLINE):
                await tls.do_handshake()
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.getpeercert()["subjectAltName"] == (("DNS", "utcp.test"),)
            payload = bytes(range(256)) * 400  # 100 KiB: many records and segments
            assert await roundtrip(tls, payload) == payload
            with trio.fail_after(DEADLINE):
                await tls.aclose()  # close_notify, then closes the utcp connection
        with trio.fail_after(DEADLINE):
            await closed_cleanly.wait()
        nursery.cancel_scope.cancel()
    assert errors == []


async def test_tls_rejects_wrong_hostname() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("utcp.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def tls_server(conn: utcp.Connection) -> None:
        try:
            await trio.SSLStream(conn, server_ctx, server_side=True).do_handshake()
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(utcp.serve, tls_server, 0)
        async with utcp.open_stream(*listeners[0].local_address) as conn:
            tls = trio.SSLStream(conn, client_ctx, server_hostname="other.test")
            with trio.fail_after(DEADLINE), pytest.raises(trio.BrokenResourceError) as info:
                await tls.do_handshake()
            assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        nursery.cancel_scope.cancel()


# -- AnyIO -------------------------------------------------------------------------------


class AnyioByteStream(anyio.abc.ByteStream):
    """A utcp Connection seen through AnyIO's byte-stream interface."""

    def __init__(self, conn: utcp.Connection) -> None:
        self.conn = conn

    async def receive(self, max_bytes: int = 65536) -> bytes:
        data = await self.conn.receive_some(max_bytes)
        if not data:
            raise anyio.EndOfStream
        return data

    async def send(self, item: bytes) -> None:
        await self.conn.send_all(item)

    async def send_eof(self) -> None:
        await self.conn.send_eof()

    async def aclose(self) -> None:
        await self.conn.aclose()


def test_anyio_trio_backend() -> None:
    """utcp under AnyIO's Trio backend: task groups, task_status, cancel scopes, streams."""
    log: list[str] = []

    async def handler(conn: utcp.Connection) -> None:
        stream = AnyioByteStream(conn)
        buffered = BufferedByteReceiveStream(stream)
        while True:
            try:
                line = await buffered.receive_until(b"\n", 1024)
            except anyio.IncompleteRead:
                break
            await stream.send(line[::-1] + b"\n")
        log.append("server saw EOF")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            listeners = await tg.start(utcp.serve, handler, 0)  # AnyIO's task_status
            async with utcp.open_stream(*listeners[0].local_address) as conn:
                stream = AnyioByteStream(conn)
                buffered = BufferedByteReceiveStream(stream)
                with anyio.fail_after(DEADLINE):
                    for word in (b"utcp", b"anyio", b"trio"):
                        await stream.send(word + b"\n")
                        log.append((await buffered.receive_until(b"\n", 1024)).decode())
                    await stream.send_eof()
                    with pytest.raises(anyio.EndOfStream):
                        await buffered.receive()
            with anyio.fail_after(DEADLINE):
                while "server saw EOF" not in log:
                    await anyio.sleep(0.001)
            tg.cancel_scope.cancel()

    anyio.run(main, backend="trio")
    assert log == ["pctu", "oiyna", "oirt", "server saw EOF"]


# -- engine findings -----------------------------------------------------------------


async def test_peer_not_left_in_last_ack_after_client_endpoint_closes() -> None:
    client_gone = trio.Event()
    server_conn: list[utcp.Connection] = []

    async def handler(conn: utcp.Connection) -> None:
        server_conn.append(conn)
        assert await conn.receive_some() == b""  # the client half-closed: FIN_WAIT_2 there
        await conn.send_all(b"last words")
        await client_gone.wait()
        await conn.send_eof()  # our FIN goes to a socket that is gone

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(utcp.serve, handler, 0)
        async with utcp.open_endpoint() as ep:  # not open_stream, which waits for the FIN
            client = await ep.connect(listeners[0].local_address)
            await client.send_eof()
            with trio.fail_after(DEADLINE):
                assert await client.receive_some() == b"last words"
            assert client.state is State.FIN_WAIT_2
            await client.aclose()
        client_gone.set()
        # A RST from the client's endpoint as it closed would let the server finish.
        with trio.fail_after(2):
            while server_conn[0].state is not State.CLOSED:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
