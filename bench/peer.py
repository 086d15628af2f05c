"""Child processes of the benchmark suite: ``python -m bench.peer COMMAND ...``.

They talk to the parent with one JSON object per line on stdout (and read
commands, when they need any, as JSON lines on stdin).  A child exits on its
own when its stdin reaches end of file, so a parent that dies never leaves
one behind.

Commands:

``sink``
    A utcp endpoint that accepts one connection, reads it to the end and
    closes.  Prints ``{"address": [host, port], "port": vport}`` when ready
    and ``{"received": n}`` when done.

``mem --mode idle|timewait --target HOST:PORT --ports P1,P2.. --n N [--window S]``
    The memory probe of scenario 4.  It opens one utcp endpoint (the
    measured one) and connects ``N`` times to the parent's listeners, after
    a warm-up of ``max(20, N // 50)`` connections, taking a baseline after
    the warm-up:

    * ``idle``: the connections stay ESTABLISHED with empty buffers; once
      every one of them is ESTABLISHED and none has a timer running
      (``Endpoint.connections()`` rows with ``timer is None``: the
      handshake's delayed ACKs are done), it measures memory, then samples
      its own CPU time (``time.process_time``) over ``--window`` seconds of
      idleness twice: right away ("post-setup") and again once
      ``rto_initial`` + 0.2 s has passed since setup ended ("steady", the
      reported number): a connection's task can wake once for the stale
      deadline of its SYN's retransmission timer about 1 s after connect.
    * ``timewait``: each connection is closed right after it is established
      (this side closes first), the parent closes its end when it reads
      EOF, so this side ends in TIME_WAIT (msl=3600: nothing expires).

    Memory is the growth of the process's RSS (``/proc/self/statm``) from the
    baseline, after ``gc.collect()``, divided by ``N``: everything the
    endpoint and Trio keep per connection (for ESTABLISHED: the core's TCB,
    the Connection object, its task and parking lots, dict entries; for
    TIME_WAIT: whatever the endpoint keeps after the application let go).  Prints one JSON
    result, then waits for end of file on stdin; leaving the endpoint aborts
    what is left.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from typing import Any

import trio

import utcp

from .common import rss_bytes


def _say(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


async def _wait_stdin_eof() -> None:
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    try:
        while await stdin.receive_some(4096):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


async def _cpu_window(seconds: float) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) spent sleeping ``seconds`` in Trio."""
    w0 = time.perf_counter()
    c0 = time.process_time()
    await trio.sleep(seconds)
    return time.process_time() - c0, time.perf_counter() - w0


async def _sink() -> None:
    async with trio.open_nursery() as nursery:

        async def watchdog() -> None:
            await _wait_stdin_eof()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watchdog)
        async with utcp.open_endpoint(("127.0.0.1", 0)) as ep:
            listener = ep.listen()
            _say({"address": list(ep.local_address), "port": listener.port})
            conn = await listener.accept()
            got = 0
            while True:
                data = await conn.recv(1 << 20)
                if not data:
                    break
                got += len(data)
            await conn.close()
        _say({"received": got})
        nursery.cancel_scope.cancel()


async def _mem(args: argparse.Namespace) -> None:
    host, port_s = args.target.rsplit(":", 1)
    target = (host, int(port_s))
    ports = [int(p) for p in args.ports.split(",")]
    mode = args.mode
    n = args.n
    warm = max(20, n // 50)
    # timewait: long TIME_WAIT, and a wide ephemeral range so 100k entries fit
    # (the 4-tuple also varies with the parent's listener port).
    opts: dict[str, Any] = {"ephemeral_ports": (1024, 65535)}
    if mode == "timewait":
        opts["msl"] = 3600.0
    async with trio.open_nursery() as nursery:

        async def watchdog() -> None:
            await _wait_stdin_eof()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watchdog)
        async with utcp.open_endpoint(("127.0.0.1", 0), **opts) as ep:
            held: list[utcp.Connection] = []

            async def make(count: int, first: int) -> None:
                next_i = first
                end = first + count

                async def worker() -> None:
                    nonlocal next_i
                    while next_i < end:
                        i = next_i
                        next_i += 1
                        conn = await ep.connect(target, ports[i % len(ports)])
                        if mode == "timewait":
                            await conn.close()
                        else:
                            held.append(conn)

                async with trio.open_nursery() as inner:
                    for _ in range(min(64, count)):
                        inner.start_soon(worker)

            async def settle(expected: int) -> dict[str, int]:
                """Wait until ``expected`` connections reached the state (idle: and no timer runs)."""
                state = "TIME_WAIT" if mode == "timewait" else "ESTABLISHED"
                deadline = trio.current_time() + 30.0
                while True:
                    counts = ep.state_counts()
                    ready = counts.get(state, 0) >= expected
                    if ready and mode == "idle":
                        ready = all(row.timer is None for row in ep.connections())
                    if ready or trio.current_time() > deadline:
                        return counts
                    await trio.sleep(0.05)

            await make(warm, 0)
            await settle(warm)
            await trio.sleep(0.1)
            gc.collect()
            base = rss_bytes()
            t0 = time.perf_counter()
            await make(n, warm)
            counts = await settle(warm + n)
            setup = time.perf_counter() - t0
            await trio.sleep(0.1)
            gc.collect()
            after = rss_bytes()
            result: dict[str, Any] = {
                "mode": mode,
                "n": n,
                "warmup": warm,
                "rss_base": base,
                "rss_after": after,
                "per_conn_bytes": (after - base) / n,
                "states": counts,
                "setup_seconds": setup,
            }
            if mode == "idle":
                result["timers_running"] = sum(row.timer is not None for row in ep.connections())
                # Window 1, right after setup; window 2 once a connection's
                # initial RTO (rto_initial, 1 s) has certainly passed since the
                # last connect: a task may wake once for a stale deadline.
                settled = time.perf_counter()
                (
                    result["post_setup_cpu_seconds"],
                    result["post_setup_wall_seconds"],
                ) = await _cpu_window(args.window)
                quiet = ep.options.rto_initial + 0.2 - (time.perf_counter() - settled)
                await trio.sleep(max(0.0, quiet))
                result["idle_cpu_seconds"], result["idle_wall_seconds"] = await _cpu_window(
                    args.window
                )
            _say(result)
            await trio.sleep_forever()  # until the watchdog sees EOF; the endpoint then aborts all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sink")
    mem = sub.add_parser("mem")
    mem.add_argument("--mode", choices=["idle", "timewait"], required=True)
    mem.add_argument("--target", required=True)
    mem.add_argument("--ports", required=True)
    mem.add_argument("--n", type=int, required=True)
    mem.add_argument("--window", type=float, default=2.0)
    args = parser.parse_args(argv)
    try:
        if args.command == "sink":
            trio.run(_sink)
        else:
            trio.run(_mem, args)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # report to the parent, which raises it
        _say({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
