"""Tests for the impairing UDP relay (utcp.chaos) and the ``chaos`` command line.

The relay tests use real UDP sockets on loopback.  Nothing waits on real
time for a protocol timer: tests either wait for counters (polling with a
tiny sleep, bounded by ``fail_after``) or run under a MockClock.

About MockClock: with real sockets, an autojump threshold of exactly 0 could
jump virtual time in the microseconds a datagram spends in the kernel.  The
tests use a small positive threshold instead, so virtual time only moves when
everything has been idle for a few real milliseconds.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import utcp.__main__ as cli
from utcp.chaos import ChaosRelay, RelayStats, derive_seed, open_relay, run_relay
from utcp.netem import Impairment

AUTOJUMP = 0.02


def _have_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HOSTS = [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param(
        "::1",
        id="ipv6",
        marks=pytest.mark.skipif(not _have_ipv6(), reason="no IPv6 loopback"),
    ),
]


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class EchoPeer:
    """A UDP echo server that records what it received."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.address: tuple[str, int] = ("", 0)

    async def run(self, host: str, *, task_status: trio.TaskStatus[EchoPeer]) -> None:
        with trio.socket.socket(family_of(host), socket.SOCK_DGRAM) as sock:
            await sock.bind((host, 0))
            self.address = sock.getsockname()[:2]
            task_status.started(self)
            while True:
                data, addr = await sock.recvfrom(65536)
                self.received.append(data)
                await sock.sendto(data, addr)


@asynccontextmanager
async def echo_and_relay(
    host: str, **relay_kwargs: Any
) -> AsyncIterator[tuple[EchoPeer, ChaosRelay]]:
    async with trio.open_nursery() as nursery:
        echo = await nursery.start(EchoPeer().run, host)
        async with open_relay((host, 0), echo.address, **relay_kwargs) as relay:
            yield echo, relay
        nursery.cancel_scope.cancel()


async def client_socket(host: str) -> trio.socket.SocketType:
    sock = trio.socket.socket(family_of(host), socket.SOCK_DGRAM)
    await sock.bind((host, 0))
    return sock


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition that depends on the kernel delivering datagrams."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.001)


async def recv_n(sock: trio.socket.SocketType, n: int, timeout: float = 5.0) -> list[bytes]:
    out = []
    with trio.fail_after(timeout):
        for _ in range(n):
            out.append(await sock.recv(65536))
    return out


PAYLOADS = [b"", b"x", bytes(range(256)), b"\xff" * 9000] + [f"msg {i}".encode() for i in range(20)]


# -- pass-through ----------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_transparent_relay_both_ways(host: str) -> None:
    async with echo_and_relay(host, seed=1) as (echo, relay):
        assert relay.address[0] == host and relay.address[1] > 0
        with await client_socket(host) as sock:
            for p in PAYLOADS:
                await sock.sendto(p, relay.address)
            replies = await recv_n(sock, len(PAYLOADS))
        assert replies == PAYLOADS
        assert echo.received == PAYLOADS
        stats = relay.stats
    n = len(PAYLOADS)
    assert stats.clients == 1 and stats.clients_total == 1
    assert stats.c2s.submitted == stats.c2s.delivered == n
    assert stats.s2c.submitted == stats.s2c.delivered == n
    assert stats.recv_errors == stats.send_errors == 0


async def test_each_client_gets_its_own_replies() -> None:
    host = "127.0.0.1"
    async with echo_and_relay(host) as (_, relay):
        with await client_socket(host) as a, await client_socket(host) as b:
            for i in range(5):
                await a.sendto(b"a%d" % i, relay.address)
                await b.sendto(b"b%d" % i, relay.address)
            got_a = await recv_n(a, 5)
            got_b = await recv_n(b, 5)
        assert got_a == [b"a%d" % i for i in range(5)]
        assert got_b == [b"b%d" % i for i in range(5)]
        assert relay.stats.clients == 2


async def test_run_relay_with_nursery_start() -> None:
    async with trio.open_nursery() as nursery:
        echo = await nursery.start(EchoPeer().run, "127.0.0.1")
        relay = await nursery.start(
            partial(
                run_relay,
                ("127.0.0.1", 0),
                echo.address,
                c2s=Impairment(),
                s2c=Impairment(),
                seed=0,
            )
        )
        assert isinstance(relay, ChaosRelay)
        with await client_socket("127.0.0.1") as sock:
            await sock.sendto(b"ping", relay.address)
            assert await recv_n(sock, 1) == [b"ping"]
        nursery.cancel_scope.cancel()


# -- impairments over real sockets -----------------------------------------------


async def test_total_loss_client_to_server() -> None:
    n = 50
    async with echo_and_relay("127.0.0.1", c2s=Impairment(loss=1.0)) as (echo, relay):
        with await client_socket("127.0.0.1") as sock:
            for i in range(n):
                await sock.sendto(b"%d" % i, relay.address)
            await wait_for(lambda: relay.stats.c2s.submitted == n)
        stats = relay.stats
        assert stats.c2s.dropped_loss == n and stats.c2s.delivered == 0
        assert echo.received == []
        assert stats.s2c.submitted == 0


@pytest.mark.parametrize("host", HOSTS)
async def test_total_loss_server_to_client(host: str) -> None:
    n = 50
    async with echo_and_relay(host, s2c=Impairment(loss=1.0)) as (echo, relay):
        with await client_socket(host) as sock:
            for i in range(n):
                await sock.sendto(b"%d" % i, relay.address)
            await wait_for(lambda: relay.stats.s2c.submitted == n)
        assert len(echo.received) == n
        stats = relay.stats
        assert stats.s2c.dropped_loss == n and stats.s2c.delivered == 0


async def test_duplication_through_relay() -> None:
    n = 10
    async with echo_and_relay("127.0.0.1", c2s=Impairment(duplicate=1.0)) as (echo, relay):
        with await client_socket("127.0.0.1") as sock:
            for i in range(n):
                await sock.sendto(b"%d" % i, relay.address)
            replies = await recv_n(sock, 2 * n)
        assert sorted(replies) == sorted([b"%d" % i for i in range(n)] * 2)
        assert len(echo.received) == 2 * n
        assert relay.stats.c2s.duplicated == n


async def test_relay_is_deterministic_per_seed() -> None:
    async def survivors(seed: int) -> list[bytes]:
        n = 200
        async with echo_and_relay("127.0.0.1", c2s=Impairment(loss=0.5), seed=seed) as (
            echo,
            relay,
        ):
            with await client_socket("127.0.0.1") as sock:
                for i in range(n):
                    await sock.sendto(b"%d" % i, relay.address)
                await wait_for(lambda: relay.stats.c2s.submitted == n)
                await wait_for(lambda: len(echo.received) == relay.stats.c2s.delivered)
            return list(echo.received)

    a = await survivors(7)
    b = await survivors(7)
    c = await survivors(8)
    assert a == b
    assert a != c
    assert 50 < len(a) < 150


def test_derive_seed() -> None:
    seeds = {derive_seed(s, i, d) for s in (0, 1) for i in range(3) for d in ("c2s", "s2c")}
    assert len(seeds) == 12
    assert derive_seed(5, 2, "c2s") == derive_seed(5, 2, "c2s")


# -- virtual time ------------------------------------------------------------------


async def test_delay_in_virtual_time(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = AUTOJUMP
    c2s = Impairment(delay=0.25)
    s2c = Impairment(delay=0.5)
    async with echo_and_relay("127.0.0.1", c2s=c2s, s2c=s2c) as (echo, relay):
        with await client_socket("127.0.0.1") as sock:
            for i in range(3):
                t0 = trio.current_time()
                await sock.sendto(b"%d" % i, relay.address)
                with trio.fail_after(60):
                    reply = await sock.recv(100)
                elapsed = trio.current_time() - t0
                assert reply == b"%d" % i
                # Never early; and the virtual clock only jumps to relay deadlines.
                assert 0.75 - 1e-9 <= elapsed <= 0.75 + 1e-6
        assert len(echo.received) == 3


async def test_blackout_in_virtual_time(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = AUTOJUMP
    blackout = Impairment(blackouts=[(0.0, 1.0)])
    async with echo_and_relay("127.0.0.1", c2s=blackout, s2c=blackout) as (echo, relay):
        start = trio.current_time()
        with await client_socket("127.0.0.1") as sock:
            await sock.sendto(b"lost", relay.address)
            await wait_for(lambda: relay.stats.c2s.submitted == 1)
            assert relay.stats.c2s.dropped_blackout == 1
            await trio.sleep_until(start + 1.0)
            await sock.sendto(b"through", relay.address)
            with trio.fail_after(60):
                assert await sock.recv(100) == b"through"
        assert echo.received == [b"through"]
        assert relay.stats.c2s.dropped_blackout == 1


async def test_reorder_through_relay(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = AUTOJUMP
    imp = Impairment(reorder=0.3, reorder_delay=0.05)
    n = 40
    async with echo_and_relay("127.0.0.1", c2s=imp, seed=3) as (echo, relay):
        with await client_socket("127.0.0.1") as sock:
            for i in range(n):
                await sock.sendto(b"%d" % i, relay.address)
            replies = await recv_n(sock, n, timeout=60)
        assert sorted(replies) == sorted(b"%d" % i for i in range(n))
        assert replies != [b"%d" % i for i in range(n)]
        assert relay.stats.c2s.reordered > 0


# -- limits and errors -------------------------------------------------------------


async def test_max_clients_evicts_least_recent() -> None:
    host = "127.0.0.1"
    async with echo_and_relay(host, max_clients=2) as (_, relay):
        socks = [await client_socket(host) for _ in range(3)]
        try:
            for i, s in enumerate(socks):
                await s.sendto(b"%d" % i, relay.address)
                assert await recv_n(s, 1) == [b"%d" % i]
            stats = relay.stats
            assert stats.clients == 2 and stats.clients_total == 3 and stats.clients_evicted == 1
            # The evicted client comes back as a new one and still works.
            await socks[0].sendto(b"again", relay.address)
            assert await recv_n(socks[0], 1) == [b"again"]
            stats = relay.stats
            assert stats.clients_total == 4 and stats.clients_evicted == 2
            # Stats of evicted clients are kept in the totals.
            assert stats.c2s.submitted == 4 and stats.s2c.delivered == 4
        finally:
            for s in socks:
                s.close()


async def test_unreachable_server_is_counted_not_fatal() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tmp:
        tmp.bind(("127.0.0.1", 0))
        dead = tmp.getsockname()
    async with open_relay(("127.0.0.1", 0), dead) as relay:
        with await client_socket("127.0.0.1") as sock:
            for _ in range(3):
                await sock.sendto(b"hello?", relay.address)
            await wait_for(lambda: relay.stats.c2s.delivered == 3)
            await wait_for(lambda: relay.stats.recv_errors + relay.stats.send_errors >= 1)
    # Leaving the block cleanly shows the relay did not crash.
    assert relay.stats.c2s.delivered == 3


async def test_relay_rejects_bad_config_and_reports_address_errors() -> None:
    with pytest.raises(ValueError, match="max_clients"):
        ChaosRelay(("127.0.0.1", 0), ("127.0.0.1", 9), max_clients=0)
    relay = ChaosRelay(("127.0.0.1", 0), ("127.0.0.1", 9))
    with pytest.raises(RuntimeError, match="not started"):
        _ = relay.address
    with pytest.raises(OSError, match="cannot bind"):
        await ChaosRelay(("192.0.2.1", 0), ("127.0.0.1", 9)).run()


def test_stats_summary() -> None:
    line = RelayStats().summary()
    assert "\n" not in line and "c2s:" in line and "s2c:" in line


# -- command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["chaos", "--listen", "bad"],
        ["chaos", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:0"],
        ["chaos", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:70000"],
        ["chaos", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:http"],
        ["chaos", "--listen", "::1:5000", "--forward", "127.0.0.1:9"],
        ["chaos", "--listen", "[nothost]:5000", "--forward", "127.0.0.1:9"],
        ["chaos", "--listen", "[::1]5000", "--forward", "127.0.0.1:9"],
        ["chaos", "--listen", "127.0.0.1:0", "--forward", ":9"],
        ["chaos", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--loss", "1.5"],
        ["chaos", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--c2s-loss", "x"],
        ["chaos", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--burst-loss", "0.1,0.2"],
        ["chaos", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--delay", "-1"],
        ["chaos", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--rate", "0"],
        ["chaos", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--blackout", "5"],
        ["chaos", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--blackout", "1:0"],
        ["chaos", "--listen", "127.0.0.1:0"],
        ["nonsense"],
        [],
    ],
)
def test_cli_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert len(err.splitlines()) <= 3


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    assert "chaos" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        cli.main(["chaos", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--listen", "--forward", "--burst-loss", "--c2s-loss", "--s2c-loss", "--blackout"):
        assert flag in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:9000", ("::1", 9000)),
        ("[fe80::1%lo]:1", ("fe80::1%lo", 1)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert cli.parse_hostport(text) == expected


def test_parse_listen_address_allows_wildcard_and_port_0() -> None:
    assert cli.listen_address(":0") == ("", 0)
    with pytest.raises(argparse.ArgumentTypeError):
        cli.forward_address(":80")


def test_cli_builds_per_direction_impairments() -> None:
    args = cli.build_parser().parse_args(
        [
            "chaos",
            "--listen", "127.0.0.1:0",
            "--forward", "[::1]:9",
            "--loss", "0.1",
            "--s2c-loss", "0.3",
            "--delay", "20ms",
            "--c2s-jitter", "0.005",
            "--burst-loss", "0.01,0.3,0,1",
            "--rate", "1M",
            "--queue", "64k",
            "--blackout", "1:2",
            "--blackout", "10:0.5",
            "--seed", "9",
        ]
    )  # fmt: skip
    c2s = cli._impairment(args, "c2s")
    s2c = cli._impairment(args, "s2c")
    assert c2s.loss == 0.1 and s2c.loss == 0.3
    assert c2s.delay == s2c.delay == pytest.approx(0.02)
    assert c2s.jitter == 0.005 and s2c.jitter == 0.0
    assert c2s.burst_loss == s2c.burst_loss == (0.01, 0.3, 0.0, 1.0)
    assert c2s.rate == 1e6 and c2s.queue_limit == 64_000
    assert s2c.blackouts == [(1.0, 2.0), (10.0, 0.5)]
    assert args.forward == ("::1", 9) and args.seed == 9


def test_cli_runs_for_duration(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(
        ["chaos", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--duration", "0.05"]
    )
    assert rc == 0
    err = capsys.readouterr().err
    assert "relaying 127.0.0.1:" in err
    assert "final stats:" in err


def test_cli_ctrl_c_prints_stats_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def interrupted(relay: ChaosRelay, args: argparse.Namespace) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.run)
            raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_chaos_async", interrupted)
    rc = cli.main(["chaos", "--listen", "[::1]:0", "--forward", "[::1]:9", "--loss", "0.5"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "interrupted" in err and "final stats: clients=0" in err
    assert "Traceback" not in err


def test_cli_bind_failure_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["chaos", "--listen", "192.0.2.1:0", "--forward", "127.0.0.1:9"])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot bind" in err


def test_python_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "utcp", "chaos", "--listen", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "expected HOST:PORT" in result.stderr
