"""Integration tests: utcp endpoints talking over real UDP on loopback.

Every test runs for IPv4 and, when the machine has an IPv6 loopback, IPv6
(the ``host`` fixture of conftest.py).  Nothing waits in real time for a
protocol timer: tests that depend on TIME_WAIT or SYN retransmissions run
under pytest-trio's ``autojump_clock`` (``MockClock(autojump_threshold=0)``),
where virtual time only moves when every task is blocked.  On loopback a
datagram is queued on the receiving socket during ``sendto`` itself, so the
clock does not jump while one is "in flight".
"""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

import utcp
from utcp import State

# Generous bound for anything that should take milliseconds on loopback.
DEADLINE = 20.0


@dataclass
class Pair:
    """Two endpoints and one established connection between them."""

    server_ep: utcp.Endpoint
    client_ep: utcp.Endpoint
    listener: utcp.Listener
    client: utcp.Connection
    server: utcp.Connection


@asynccontextmanager
async def endpoint_pair(
    host: str, **options: Any
) -> AsyncIterator[tuple[utcp.Endpoint, utcp.Endpoint]]:
    """A server and a client endpoint; the client's closes first."""
    async with (
        utcp.open_endpoint((host, 0), **options) as server_ep,
        utcp.open_endpoint((host, 0), **options) as client_ep,
    ):
        yield server_ep, client_ep


@asynccontextmanager
async def connected_pair(host: str, **options: Any) -> AsyncIterator[Pair]:
    """An established connection from ``client_ep`` to a listener on ``server_ep``."""
    async with endpoint_pair(host, **options) as (server_ep, client_ep):
        listener = server_ep.listen()
        client = await client_ep.connect(server_ep.local_address)
        server = await listener.accept()
        yield Pair(server_ep, client_ep, listener, client, server)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` (for state reached through the peer's packets)."""
    with trio.fail_after(DEADLINE):
        while not predicate():
            await trio.sleep(0.001)


async def recv_all(conn: utcp.Connection) -> bytes:
    """Read until end of stream."""
    chunks = []
    while chunk := await conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def rows(ep: utcp.Endpoint) -> list[tuple[State, int, tuple[str, int] | None, int | None]]:
    """``Endpoint.connections()`` reduced to (state, local port, remote address, remote port)."""
    return sorted(
        ((r.state, r.local_port, r.remote_address, r.remote_port) for r in ep.connections()),
        key=repr,
    )


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# ----------------------------------------------------------------------
# Data transfer


async def test_echo(host: str) -> None:
    with trio.fail_after(DEADLINE):
        async with endpoint_pair(host) as (server_ep, client_ep):
            listener = server_ep.listen()

            async def serve() -> None:
                conn = await listener.accept()
                data = await conn.recv()
                await conn.send(data.upper())
                assert await conn.recv() == b""
                await conn.close()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                client = await client_ep.connect(server_ep.local_address)
                await client.send(b"hello, utcp")
                assert await client.recv() == b"HELLO, UTCP"
                await client.close()


async def test_one_mebibyte_each_way_concurrently(host: str) -> None:
    size = 1 << 20
    rng = random.Random(1234)
    up = rng.randbytes(size)
    down = rng.randbytes(size)
    assert up != down

    async def sender(conn: utcp.Connection, data: bytes, seed: int) -> None:
        r = random.Random(seed)
        view = memoryview(data)
        while view:
            n = r.randint(1, 40000)
            await conn.send_all(view[:n])
            view = view[n:]

    async def receiver(conn: utcp.Connection, out: bytearray, seed: int) -> None:
        r = random.Random(seed)
        while len(out) < size:
            chunk = await conn.receive_some(r.randint(1, 70000))
            assert chunk, "unexpected end of stream"
            out += chunk

    with trio.fail_after(DEADLINE):
        async with connected_pair(host) as p:
            got_up = bytearray()
            got_down = bytearray()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender, p.client, up, 1)
                nursery.start_soon(sender, p.server, down, 2)
                nursery.start_soon(receiver, p.server, got_up, 3)
                nursery.start_soon(receiver, p.client, got_down, 4)
            assert bytes(got_up) == up
            assert bytes(got_down) == down
            # End of stream comes after exactly the data, on both sides.
            await p.client.shutdown()
            await p.server.shutdown()
            assert await p.server.recv() == b""
            assert await p.client.recv() == b""
            assert p.client.info()["bytes_received"] == size
            assert p.server.info()["bytes_received"] == size
            await p.client.close()
            await p.server.close()


async def test_fifty_concurrent_connections(host: str) -> None:
    count = 50
    payloads = [f"<{i}:".encode() + bytes([i]) * (1000 + 137 * i) + b">" for i in range(count)]
    results: dict[int, bytes] = {}
    ports: set[int] = set()

    async def handle(conn: utcp.Connection) -> None:
        data = await recv_all(conn)
        await conn.send(data)
        await conn.close()

    async def serve(listener: utcp.Listener) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(handle, await listener.accept())

    async def client(ep: utcp.Endpoint, address: tuple[str, int], i: int) -> None:
        conn = await ep.connect(address)
        ports.add(conn.local_port)
        await conn.send(payloads[i])
        await conn.shutdown()
        results[i] = await recv_all(conn)
        await conn.close()

    with trio.fail_after(DEADLINE):
        async with endpoint_pair(host) as (server_ep, client_ep):
            listener = server_ep.listen()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve, listener)
                for i in range(count):
                    nursery.start_soon(client, client_ep, server_ep.local_address, i)
    assert len(ports) == count
    assert results == dict(enumerate(payloads))


async def test_half_close(host: str) -> None:
    request = b"GET /" + b"x" * 5000
    reply = b"REPLY " + b"y" * 20000
    with trio.fail_after(DEADLINE):
        async with endpoint_pair(host) as (server_ep, client_ep):
            listener = server_ep.listen()
            server_saw: list[bytes] = []

            async def serve() -> None:
                conn = await listener.accept()
                got = bytearray()
                while chunk := await conn.recv():
                    got += chunk
                server_saw.append(bytes(got))
                assert conn.state is State.CLOSE_WAIT
                # EOF is sticky
                assert await conn.recv() == b""
                await conn.send(reply)
                await conn.close()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                conn = await client_ep.connect(server_ep.local_address)
                await conn.send(request)
                await conn.shutdown()
                assert conn.state in (State.FIN_WAIT_1, State.FIN_WAIT_2)
                assert await recv_all(conn) == reply
                assert await conn.recv() == b""
                await conn.close()
            assert server_saw == [request]


# ----------------------------------------------------------------------
# Refusal, reset


async def test_connect_refused_without_listener(host: str) -> None:
    with trio.fail_after(DEADLINE):
        async with endpoint_pair(host) as (server_ep, client_ep):
            with pytest.raises(ConnectionRefusedError, match="refused"):
                await client_ep.connect(server_ep.local_address)
            # The failed connection's task forgets it as soon as it runs.
            await trio.testing.wait_all_tasks_blocked()
            assert client_ep.connections() == []
            assert server_ep.connections() == []


async def test_connect_refused_on_other_virtual_port(host: str) -> None:
    with trio.fail_after(DEADLINE):
        async with endpoint_pair(host) as (server_ep, client_ep):
            listener = server_ep.listen()
            assert listener.port == server_ep.local_address[1]
            other = 1 if listener.port != 1 else 2
            with pytest.raises(ConnectionRefusedError):
                await client_ep.connect(server_ep.local_address, port=other)
            # A listener on an explicit virtual port is reachable with port=.
            listener2 = server_ep.listen(port=other)
            conn = await client_ep.connect(server_ep.local_address, port=other)
            peer = await listener2.accept()
            assert conn.remote_port == other == peer.local_port
            await conn.send(b"ping")
            assert await peer.recv() == b"ping"
            await conn.close()
            await peer.close()


async def test_abort_resets_peer_recv(host: str) -> None:
    with trio.fail_after(DEADLINE):
        async with connected_pair(host) as p:
            p.client.abort()
            assert p.client.state is State.CLOSED
            with pytest.raises(ConnectionResetError, match="reset"):
                await p.server.recv()
            assert p.server.state is State.CLOSED
            # The failure is sticky, for sending too.
            with pytest.raises(ConnectionResetError):
                await p.server.recv()
            with pytest.raises(ConnectionResetError):
                await p.server.send(b"x")
            # The aborting side's object is closed.
            with pytest.raises(trio.ClosedResourceError):
                await p.client.recv()


async def test_abort_resets_peer_receive_some(host: str) -> None:
    with trio.fail_after(DEADLINE):
        async with connected_pair(host) as p:

            async def abort_soon() -> None:
                await trio.testing.wait_all_tasks_blocked()
                p.server.abort()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(abort_soon)
                with pytest.raises(trio.BrokenResourceError) as exc_info:
                    await p.client.receive_some(10)
            assert isinstance(exc_info.value.__cause__, ConnectionResetError)
            with pytest.raises(trio.BrokenResourceError) as exc_info:
                await p.client.send_all(b"x")
            assert isinstance(exc_info.value.__cause__, ConnectionResetError)


async def test_close_with_unread_data_resets_peer(host: str) -> None:
    with trio.fail_after(DEADLINE):
        async with connected_pair(host) as p:
            await p.client.send(b"never read")
            await wait_until(lambda: p.server.info()["recv_queue"] == 10)
            await p.server.close()  # unread data: RST instead of FIN, as Linux does
            with pytest.raises(ConnectionResetError):
                await p.client.recv()


async def test_linger_zero_close_resets_peer(host: str) -> None:
    with trio.fail_after(DEADLINE):
        async with endpoint_pair(host) as (server_ep, client_ep):
            listener = server_ep.listen()
            client = await client_ep.connect(server_ep.local_address, linger=0)
            server = await listener.accept()
            await client.close()
            assert client.state is State.CLOSED
            with pytest.raises(trio.BrokenResourceError) as exc_info:
                await server.receive_some()
            assert isinstance(exc_info.value.__cause__, ConnectionResetError)


async def test_listener_close_resets_unaccepted(host: str) -> None:
    with trio.fail_after(DEADLINE):
        async with endpoint_pair(host) as (server_ep, client_ep):
            listener = server_ep.listen()
            client = await client_ep.connect(server_ep.local_address)
            await wait_until(
                lambda: any(r.state is State.ESTABLISHED for r in server_ep.connections())
            )
            await listener.aclose()
            with pytest.raises(ConnectionResetError):
                await client.recv()
            # No listener any more: a new connection attempt is refused.
            with pytest.raises(ConnectionRefusedError):
                await client_ep.connect(server_ep.local_address)


# ----------------------------------------------------------------------
# States


async def test_graceful_close_time_wait_lasts_two_msl(
    host: str, autojump_clock: trio.testing.MockClock
) -> None:
    msl = 5.0
    async with connected_pair(host, msl=msl) as p:
        t_close = trio.current_time()
        await p.client.close()  # the active closer
        assert await p.server.recv() == b""
        await p.server.close()
        await p.server.wait_closed()  # LAST_ACK -> CLOSED on the client's ACK
        t_closed = trio.current_time()
        assert p.server.state is State.CLOSED
        assert rows(p.server_ep) == [(State.LISTEN, p.listener.port, None, None)]

        assert p.client.state is State.TIME_WAIT
        [row] = p.client_ep.connections()
        assert row.state is State.TIME_WAIT
        assert (row.local_port, row.remote_port) == (p.client.local_port, p.listener.port)
        assert row.remote_address == p.server_ep.local_address
        # TIME_WAIT began between our close() and the server reaching CLOSED.
        assert row.timer is not None
        assert t_close + 2 * msl <= row.timer <= t_closed + 2 * msl
        deadline = row.timer

        await trio.sleep_until(deadline - 0.1)  # 9.9 s into TIME_WAIT
        assert p.client.state is State.TIME_WAIT
        assert [r.state for r in p.client_ep.connections()] == [State.TIME_WAIT]

        await p.client.wait_closed()
        assert deadline <= trio.current_time() <= deadline + 0.05
        assert p.client.state is State.CLOSED
        assert p.client_ep.connections() == []


async def test_connections_snapshot_states(host: str) -> None:
    with trio.fail_after(DEADLINE):
        async with endpoint_pair(host) as (server_ep, client_ep):
            assert server_ep.connections() == []
            listener = server_ep.listen(backlog=7)
            [row] = server_ep.connections()
            assert row.state is State.LISTEN
            assert row.local_address == server_ep.local_address
            assert (row.local_port, row.remote_address, row.remote_port) == (
                listener.port,
                None,
                None,
            )

            client = await client_ep.connect(server_ep.local_address)
            server = await listener.accept()
            lport, cport = listener.port, client.local_port
            assert rows(server_ep) == sorted(
                [
                    (State.LISTEN, lport, None, None),
                    (State.ESTABLISHED, lport, client_ep.local_address, cport),
                ],
                key=repr,
            )
            assert rows(client_ep) == [(State.ESTABLISHED, cport, server_ep.local_address, lport)]

            # Queue sizes: unread data shows in the receiver's Recv-Q.
            await client.send(b"z" * 100)
            await wait_until(lambda: server.info()["recv_queue"] == 100)
            [srow] = [r for r in server_ep.connections() if r.state is State.ESTABLISHED]
            assert srow.recv_q == 100
            assert await server.recv() == b"z" * 100

            # One-sided shutdown: FIN_WAIT_2 / CLOSE_WAIT.
            await client.shutdown()
            assert await server.recv() == b""
            await wait_until(lambda: client.state is State.FIN_WAIT_2)
            assert rows(client_ep) == [(State.FIN_WAIT_2, cport, server_ep.local_address, lport)]
            assert (State.CLOSE_WAIT, lport, client_ep.local_address, cport) in rows(server_ep)

            # The other side closes: TIME_WAIT at the active closer, the server's is gone.
            await server.close()
            await server.wait_closed()
            assert rows(server_ep) == [(State.LISTEN, lport, None, None)]
            assert rows(client_ep) == [(State.TIME_WAIT, cport, server_ep.local_address, lport)]
            assert server_ep.state_counts() == {"LISTEN": 1}

            await listener.aclose()
            assert server_ep.connections() == []
            await client.close()


async def test_connection_properties(host: str) -> None:
    required = {
        "state",
        "srtt",
        "rttvar",
        "rto",
        "cwnd",
        "ssthresh",
        "snd_wnd",
        "rcv_wnd",
        "bytes_sent",
        "bytes_acked",
        "bytes_received",
        "retransmits",
    }
    with trio.fail_after(DEADLINE):
        async with connected_pair(host) as p:
            c, s = p.client, p.server
            assert isinstance(c, utcp.Connection)
            assert isinstance(c, trio.abc.HalfCloseableStream)
            assert c.state is s.state is State.ESTABLISHED
            assert c.local_address == p.client_ep.local_address
            assert c.remote_address == p.server_ep.local_address
            assert s.local_address == p.server_ep.local_address
            assert s.remote_address == p.client_ep.local_address
            assert c.local_address[0] == s.local_address[0] == host
            assert c.remote_port == s.local_port == p.listener.port == p.server_ep.local_address[1]
            assert s.remote_port == c.local_port
            lo, hi = utcp.Options().ephemeral_ports
            assert lo <= c.local_port <= hi

            data = b"0123456789" * 1000
            await c.send(data)
            got = bytearray()
            while len(got) < len(data):
                got += await s.recv()
            assert got == data
            await wait_until(lambda: c.info()["bytes_acked"] == len(data))

            for conn in (c, s):
                info = conn.info()
                assert required <= info.keys()
                assert info["state"] is State.ESTABLISHED
                assert info["srtt"] is not None and info["srtt"] >= 0
                assert info["rttvar"] >= 0
                assert info["rto"] > 0
                assert info["cwnd"] > 0
                assert info["ssthresh"] > 0
                assert info["snd_wnd"] > 0
                assert info["rcv_wnd"] > 0
                assert isinstance(info["retransmits"], int) and info["retransmits"] >= 0
            ci, si = c.info(), s.info()
            assert ci["bytes_sent"] >= len(data)
            assert ci["bytes_acked"] == len(data)
            assert si["bytes_received"] == len(data)
            assert ci["bytes_received"] == 0
            assert si["bytes_sent"] == si["bytes_acked"] == 0

            await c.shutdown()
            assert await s.recv() == b""
            assert s.state is State.CLOSE_WAIT
            assert s.info()["state"] is State.CLOSE_WAIT
            await s.close()
            await c.close()
            await s.wait_closed()
            assert s.state is State.CLOSED


# ----------------------------------------------------------------------
# Errors


async def test_use_after_close_raises_closed_resource_error(host: str) -> None:
    with trio.fail_after(DEADLINE):
        async with connected_pair(host) as p:
            await p.client.close()
            await p.client.close()  # idempotent
            with pytest.raises(trio.ClosedResourceError):
                await p.client.send(b"x")
            with pytest.raises(trio.ClosedResourceError):
                await p.client.send_all(b"x")
            with pytest.raises(trio.ClosedResourceError):
                await p.client.recv()
            with pytest.raises(trio.ClosedResourceError):
                await p.client.receive_some()
            with pytest.raises(trio.ClosedResourceError):
                await p.client.shutdown()
            with pytest.raises(trio.ClosedResourceError):
                await p.client.wait_send_all_might_not_block()
            assert await p.server.recv() == b""
            await p.server.close()

            await p.listener.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await p.listener.accept()


async def test_use_of_closed_endpoint(host: str) -> None:
    async with utcp.open_endpoint((host, 0)) as ep:
        pass
    with pytest.raises(trio.ClosedResourceError):
        ep.listen()
    with pytest.raises(trio.ClosedResourceError):
        await ep.connect((host, 9))


async def test_send_after_shutdown(host: str) -> None:
    with trio.fail_after(DEADLINE):
        async with connected_pair(host) as p:
            await p.client.send(b"last words")
            await p.client.shutdown()
            await p.client.shutdown()  # idempotent
            with pytest.raises(BrokenPipeError, match="shut down"):
                await p.client.send(b"more")
            with pytest.raises(BrokenPipeError):
                await p.client.send(b"")
            # send_all after send_eof: see test_streams.py::test_send_all_after_send_eof
            # Receiving still works after the half-close.
            assert await recv_all(p.server) == b"last words"
            await p.server.send(b"answer")
            await p.server.close()
            assert await recv_all(p.client) == b"answer"
            await p.client.close()


async def _endpoint_with(**options: Any) -> None:
    async with utcp.open_endpoint(**options):
        pass  # pragma: no cover - must raise


@pytest.mark.parametrize(
    ("options", "exc", "match"),
    [
        ({"msl": -1}, ValueError, "msl"),
        ({"msl": "long"}, TypeError, "msl"),
        ({"congestion": "nope"}, ValueError, "congestion.*'nope'"),
        ({"no_such_option": 1}, TypeError, "unknown option.*no_such_option"),
        ({"rcvbuf": 10}, ValueError, "rcvbuf"),
        ({"nodelay": 1}, TypeError, "nodelay"),
        ({"local_address": ("127.0.0.1", 70000)}, ValueError, "65535"),
        ({"local_address": "127.0.0.1:80"}, TypeError, "tuple"),
    ],
)
async def test_open_endpoint_bad_arguments(
    options: dict[str, Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        await _endpoint_with(**options)


async def test_bad_arguments(host: str) -> None:
    async with endpoint_pair(host) as (server_ep, client_ep):
        with pytest.raises(ValueError, match="65535.*99999"):
            await client_ep.connect((host, 99999))
        with pytest.raises(ValueError, match="port 0"):
            await client_ep.connect((host, 0))
        with pytest.raises(ValueError, match="65535"):
            await client_ep.connect(server_ep.local_address, port=-5)
        with pytest.raises(TypeError, match="port must be an int"):
            await client_ep.connect((host, "80"))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="tuple"):
            await client_ep.connect(host)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="port 0"):
            server_ep.listen(port=0)
        with pytest.raises(ValueError, match="65535"):
            server_ep.listen(port=65536)
        with pytest.raises(TypeError, match="unknown option.*bogus"):
            server_ep.listen(bogus=True)
        with pytest.raises(TypeError, match="unknown option.*bogus"):
            await client_ep.connect(server_ep.local_address, bogus=True)
        with pytest.raises(ValueError, match="congestion"):
            await client_ep.connect(server_ep.local_address, congestion="nope")
        with pytest.raises(TypeError, match="somaxconn.*open_endpoint"):
            server_ep.listen(somaxconn=10)
        listener = server_ep.listen()
        conn = await client_ep.connect(server_ep.local_address)
        peer = await listener.accept()
        with pytest.raises(ValueError, match="max_bytes"):
            await conn.recv(0)
        with pytest.raises(TypeError, match="max_bytes"):
            await conn.recv(1.5)  # type: ignore[arg-type]
        # No connection was left behind by the rejected calls.
        assert len(client_ep.connections()) == 1
        await conn.close()
        await peer.close()


async def test_bind_udp_port_in_use(host: str) -> None:
    with socket.socket(family_of(host), socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
        with pytest.raises(OSError, match="cannot bind") as exc_info:
            await _endpoint_with(local_address=(host, port))
        assert exc_info.value.errno == errno.EADDRINUSE


async def test_bind_udp_port_in_use_by_endpoint(host: str) -> None:
    async with utcp.open_endpoint((host, 0)) as ep:
        with pytest.raises(OSError) as exc_info:
            await _endpoint_with(local_address=ep.local_address)
        assert exc_info.value.errno == errno.EADDRINUSE


async def test_listen_twice_on_same_virtual_port(host: str) -> None:
    async with utcp.open_endpoint((host, 0)) as ep:
        listener = ep.listen()
        with pytest.raises(OSError, match="already") as exc_info:
            ep.listen()
        assert exc_info.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError) as exc_info:
            ep.listen(port=ep.local_address[1])
        assert exc_info.value.errno == errno.EADDRINUSE
        ep.listen(port=80)  # another virtual port is fine
        # Once closed, the port can be listened on again.
        await listener.aclose()
        ep.listen()


async def test_connect_across_address_families(host: str) -> None:
    other, family = ("::1", "AF_INET6") if host == "127.0.0.1" else ("127.0.0.1", "AF_INET")
    async with utcp.open_endpoint((host, 0)) as ep:
        with pytest.raises(ValueError, match=f"{other!r} is {family} but the endpoint"):
            await ep.connect((other, 4000))
        assert ep.connections() == []


async def test_connect_to_silent_host_times_out(
    host: str, autojump_clock: trio.testing.MockClock
) -> None:
    # A UDP socket that is never read: our SYNs vanish and nothing answers.
    with socket.socket(family_of(host), socket.SOCK_DGRAM) as hole:
        hole.bind((host, 0))
        address = hole.getsockname()[:2]
        async with utcp.open_endpoint((host, 0)) as ep:
            start = trio.current_time()
            with pytest.raises(TimeoutError, match="timed out"):
                await ep.connect(address, syn_retries=2)
            # SYN at 0, retransmissions at 1 and 3, give up at 7 (RTO 1 s, doubling).
            assert trio.current_time() - start == pytest.approx(7.0, abs=1e-6)
            await trio.testing.wait_all_tasks_blocked()
            assert ep.connections() == []
        # The initial SYN and both retransmissions reached the silent socket.
        hole.setblocking(False)
        received = 0
        while True:
            try:
                hole.recv(2048)
            except BlockingIOError:
                break
            received += 1
        assert received == 3


async def test_connect_timeout_is_cancellable(
    host: str, autojump_clock: trio.testing.MockClock
) -> None:
    with socket.socket(family_of(host), socket.SOCK_DGRAM) as hole:
        hole.bind((host, 0))
        async with utcp.open_endpoint((host, 0)) as ep:
            with trio.move_on_after(2.5) as scope:
                await ep.connect(hole.getsockname()[:2])
            assert scope.cancelled_caught
            await trio.testing.wait_all_tasks_blocked()
            assert ep.connections() == []


async def test_time_wait_connection_closes_with_its_endpoint() -> None:
    # Leaving the endpoint's block ends TIME_WAIT (the socket it guarded is gone):
    # the connection reports CLOSED and wait_closed() returns.
    async with utcp.open_endpoint(("127.0.0.1", 0)) as server_ep:
        listener = server_ep.listen()
        async with utcp.open_endpoint(("127.0.0.1", 0)) as client_ep:
            client = await client_ep.connect(server_ep.local_address)
            server = await listener.accept()
            await client.close()
            assert await server.recv() == b""
            await server.close()
            with trio.fail_after(5):
                while client.state is not utcp.State.TIME_WAIT:
                    await trio.sleep(0.001)
        assert client.state is utcp.State.CLOSED
        with trio.fail_after(1):
            await client.wait_closed()


async def test_second_concurrent_accept_is_busy() -> None:
    async with utcp.open_endpoint(("127.0.0.1", 0)) as ep:
        listener = ep.listen()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener.accept)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await listener.accept()
            nursery.cancel_scope.cancel()


async def test_rsts_sent_by_connections_are_counted() -> None:
    async with (
        utcp.open_endpoint(("127.0.0.1", 0)) as server_ep,
        utcp.open_endpoint(("127.0.0.1", 0)) as client_ep,
    ):
        listener = server_ep.listen()
        client = await client_ep.connect(server_ep.local_address)
        server = await listener.accept()
        client.abort()
        with pytest.raises(ConnectionResetError):
            await server.recv()
        await trio.testing.wait_all_tasks_blocked()
        assert client_ep.counters["OutRsts"] == 1
