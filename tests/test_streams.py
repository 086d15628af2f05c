"""Trio's generic stream conformance checks on utcp connections over loopback UDP."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
import trio.testing

import utcp

# A send buffer and receive window this small fill up after a few kilobytes.
CLOGGABLE = {"sndbuf": 1024, "rcvbuf": 1024}


class PairMaker:
    """Makes connected (client, server) stream pairs between two long-lived endpoints."""

    def __init__(self, stack: AsyncExitStack, host: str) -> None:
        self._stack = stack
        self._host = host
        self.made: list[utcp.Connection] = []

    async def start(self) -> None:
        self.server_ep = await self._stack.enter_async_context(
            utcp.open_endpoint((self._host, 0), close_timeout=1.0)
        )
        self.client_ep = await self._stack.enter_async_context(
            utcp.open_endpoint((self._host, 0), close_timeout=1.0)
        )
        self.listener = self.server_ep.listen()
        self.clog_listener = self.server_ep.listen(port=7, **CLOGGABLE)

    async def _pair(
        self, listener: utcp.Listener, **options: Any
    ) -> tuple[utcp.Connection, utcp.Connection]:
        client = await self.client_ep.connect(
            self.server_ep.local_address, port=listener.port, **options
        )
        server = await listener.accept()
        self.made += (client, server)
        return client, server

    async def stream_maker(self) -> tuple[utcp.Connection, utcp.Connection]:
        with trio.fail_after(10):
            return await self._pair(self.listener)

    async def clogged_stream_maker(self) -> tuple[utcp.Connection, utcp.Connection]:
        """A pair whose send_all blocks, both ways, until the other stream reads.

        Both directions are clogged because check_two_way_stream also uses the
        pair flipped.
        """
        with trio.fail_after(10):
            client, server = await self._pair(self.clog_listener, **CLOGGABLE)
            await clog(client, server)
            return client, server


async def clog(a: utcp.Connection, b: utcp.Connection) -> None:
    """Send both ways until the receive windows and the send buffers are full."""

    async def fill(s: utcp.Connection) -> None:
        while True:
            await s.send_all(b"x" * 1024)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fill, a)
        nursery.start_soon(fill, b)
        # Quiet for longer than the delayed-ACK timer (delack, 40 ms), so the
        # last window update has arrived: nothing moves again until a read.
        await trio.testing.wait_all_tasks_blocked(0.05)
        nursery.cancel_scope.cancel()
    for s, r in ((a, b), (b, a)):
        assert s.info()["send_queue"] == CLOGGABLE["sndbuf"], s.info()
        assert r.info()["recv_queue"] > 0, r.info()


async def _run_check(host: str, check: Any) -> None:
    """Run a trio.testing check against fresh pairs from two long-lived endpoints."""
    with trio.fail_after(45):
        async with AsyncExitStack() as stack:
            maker = PairMaker(stack, host)
            await maker.start()
            await check(maker.stream_maker, maker.clogged_stream_maker)
            # Every connection the checks made was closed by them.
            for conn in maker.made:
                assert conn.state is not utcp.State.ESTABLISHED, conn


async def test_clogged_stream_maker_blocks(host: str) -> None:
    """The clogged maker's streams block in both directions until the peer reads."""
    with trio.fail_after(10):
        async with AsyncExitStack() as stack:
            maker = PairMaker(stack, host)
            await maker.start()
            client, server = await maker.clogged_stream_maker()
            for s, r in ((client, server), (server, client)):
                with trio.move_on_after(0.2) as scope:
                    await s.wait_send_all_might_not_block()
                assert scope.cancelled_caught
                async with trio.open_nursery() as nursery:

                    async def drain(r: utcp.Connection = r) -> None:
                        while True:
                            await r.receive_some()

                    nursery.start_soon(drain)
                    await s.wait_send_all_might_not_block()
                    nursery.cancel_scope.cancel()
            client.abort()
            server.abort()


async def test_check_two_way_stream(host: str) -> None:
    """check_one_way_stream in both directions, then a 1 MiB duplex transfer."""
    await _run_check(host, trio.testing.check_two_way_stream)


async def test_check_half_closeable_stream(host: str) -> None:
    """Also runs check_two_way_stream and check_one_way_stream (both directions)."""
    await _run_check(host, trio.testing.check_half_closeable_stream)


async def test_send_all_after_send_eof(host: str) -> None:
    """As trio.SocketStream does (and check_half_closeable_stream checks)."""
    with trio.fail_after(10):
        async with AsyncExitStack() as stack:
            maker = PairMaker(stack, host)
            await maker.start()
            client, server = await maker.stream_maker()
            await client.send_eof()
            await client.send_eof()  # idempotent
            assert await server.receive_some() == b""
            try:
                with pytest.raises(trio.ClosedResourceError):
                    await client.send_all(b"y")
                with pytest.raises(trio.ClosedResourceError):
                    await client.send_all(b"")
            finally:
                await client.aclose()
                await server.aclose()
