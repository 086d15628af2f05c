"""Shared pieces of the benchmark suite: sizes, the scenario record, small helpers."""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

#: One "MB" in this suite is 10**6 bytes (so MB/s is comparable with iperf's MB/s).
MB = 1_000_000
#: utcp's MSS with the default MTU of 1500 (1500 - 20 IP - 8 UDP - 20 TCP).
PAYLOAD = 1452
#: Application write size used by every bulk sender.
CHUNK = 64 * 1024
#: Where the project root is (the directory holding ``bench/`` and ``utcp/``).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; :data:`FULL` and :data:`QUICK` are the two presets."""

    bulk_bytes: int
    quic_bytes: int
    echo_trips: int
    conn_seq: int
    conn_concurrent_total: int
    conn_concurrency: int
    idle_conns: int
    idle_window: float
    tw_entries: int
    multi_conns: int
    multi_bytes_each: int
    loss_bytes: int
    demux_small: int
    demux_large: int
    demux_segments: int
    timeout_scale: float


FULL = Sizes(
    bulk_bytes=100 * MB,
    quic_bytes=100 * MB,
    echo_trips=5000,
    conn_seq=500,
    conn_concurrent_total=500,
    conn_concurrency=50,
    idle_conns=10_000,
    idle_window=2.0,
    tw_entries=100_000,
    multi_conns=100,
    multi_bytes_each=1 * MB,
    loss_bytes=5 * MB,
    demux_small=10,
    demux_large=10_000,
    demux_segments=20_000,
    timeout_scale=1.0,
)

QUICK = Sizes(
    bulk_bytes=2 * MB,
    quic_bytes=2 * MB,
    echo_trips=300,
    conn_seq=50,
    conn_concurrent_total=100,
    conn_concurrency=50,
    idle_conns=500,
    idle_window=0.5,
    tw_entries=2000,
    multi_conns=10,
    multi_bytes_each=200_000,
    loss_bytes=500_000,
    demux_small=10,
    demux_large=10_000,
    demux_segments=5_000,
    timeout_scale=0.25,
)


class Unavailable(Exception):
    """Raised by a scenario that cannot run here (reported as ``n/a (reason)``)."""


@dataclass(frozen=True)
class Metric:
    """One number a scenario reports."""

    key: str
    label: str
    unit: str
    fmt: str = "{:.1f}"


@dataclass
class Scenario:
    """A named benchmark: ``run(sizes)`` is awaited inside its own ``trio.run``.

    ``run`` returns a dict of metric values (keys from ``metrics``) plus
    optional ``"notes"`` (a string) and ``"extra"`` (a JSON-able dict).
    ``timeout(sizes)`` is the hard bound, enforced with :func:`trio.fail_after`.
    """

    name: str
    title: str
    method: str
    metrics: list[Metric]
    run: Callable[[Sizes], Awaitable[dict[str, Any]]]
    timeout: Callable[[Sizes], float]
    runs: list[dict[str, Any]] = field(default_factory=list)


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def jain(values: list[float]) -> float:
    """Jain's fairness index: (sum x)^2 / (n * sum x^2); 1.0 is perfectly fair."""
    if not values:
        return math.nan
    sq = sum(v * v for v in values)
    return (sum(values) ** 2) / (len(values) * sq) if sq else math.nan


def rss_bytes() -> int:
    """This process's resident set size, from /proc (Linux) or ru_maxrss as a fallback."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def python_cmd(*args: str) -> list[str]:
    """A command line running ``python -m bench.peer ARGS`` with this interpreter."""
    return [sys.executable, "-m", "bench.peer", *args]


def child_env() -> dict[str, str]:
    """The environment for child processes: the project root importable first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Child:
    """A ``python -m bench.peer`` child that talks JSON lines on stdout.

    Use as ``async with Child(args) as child:``; leaving the block (normally,
    by error or by cancellation) kills the child if it is still running and
    reaps it, so no scenario leaves processes behind.
    """

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.proc: trio.Process | None = None
        self._buf = b""

    async def __aenter__(self) -> Child:
        self.proc = await trio.lowlevel.open_process(
            python_cmd(*self.args),
            stdin=-1,  # subprocess.PIPE
            stdout=-1,
            env=child_env(),
            cwd=ROOT,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is None:
            return
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                with trio.move_on_after(2.0):
                    if proc.stdin is not None:
                        try:
                            await proc.stdin.aclose()
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    await stream.aclose()

    async def read_json(self) -> dict[str, Any]:
        """The next JSON line the child prints (raises if it exits first)."""
        assert self.proc is not None and self.proc.stdout is not None
        while b"\n" not in self._buf:
            chunk = await self.proc.stdout.receive_some(65536)
            if not chunk:
                await self.proc.wait()
                raise RuntimeError(
                    f"bench.peer {' '.join(self.args)} exited with {self.proc.returncode} "
                    "before answering"
                )
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if isinstance(msg, dict) and "error" in msg:
            raise RuntimeError(f"bench.peer {self.args[0]}: {msg['error']}")
        return dict(msg)

    async def send_json(self, msg: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        await self.proc.stdin.send_all(json.dumps(msg).encode() + b"\n")


_SEND_DATA = b"\xa5" * CHUNK


async def send_then_drain(stream: Any, total: int) -> float:
    """Send ``total`` bytes in CHUNK writes, half-close, read until the peer's EOF.

    Works on any trio.abc.HalfCloseableStream (a utcp Connection or kernel TCP);
    returns the elapsed seconds.
    """
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        n = min(CHUNK, total - sent)
        await stream.send_all(_SEND_DATA if n == CHUNK else _SEND_DATA[:n])
        sent += n
    await stream.send_eof()
    while await stream.receive_some(65536):
        pass
    return time.perf_counter() - t0
