"""Goodput and retransmission efficiency against loss, in the deterministic simulator.

Run it standalone::

    python bench/loss_table.py            # the default table (about 10 s)
    python bench/loss_table.py --help     # sizes, path, loss rates, seed

For every congestion control (NewReno, CUBIC), SACK on and off, and each
loss rate, one client sends ``--size`` bytes to a server over a simulated
path (:mod:`utcp.sim`): ``--delay`` one-way propagation delay, a bottleneck
of ``--rate`` bytes/s with a ``--queue``-byte drop-tail queue, and iid loss
at the given rate in *both* directions (data and ACKs).  Timestamps are on
(the default).  Virtual time costs nothing, so even the slowest rows take
well under a second of wall time, and the same seed always prints the same
table.

Columns:

* ``time s``: virtual seconds from the SYN until the server read the last
  byte and the FIN;
* ``goodput MB/s``: payload bytes / that time (10^6 bytes per second);
* ``lost``: payload bytes the data direction dropped (loss plus queue
  overflow), i.e. what had to be repaired;
* ``rexmit``: ``info()["bytes_retransmitted"]`` of the sender;
* ``rexmit/lost``: 1.0 means every lost byte was sent again exactly once;
  more means spurious or go-back-N retransmission;
* ``FR``: the sender's fast retransmit / fast recovery episodes;
* ``RTO``: the sender's retransmission timer expiries.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # ``python bench/loss_table.py``: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utcp import Options
from utcp._core import connection as _connection
from utcp.netem import Impairment
from utcp.sim import Simulator

LOSS_RATES = (0.0, 0.01, 0.05, 0.10, 0.20, 0.30)


@dataclass(frozen=True)
class Row:
    """One transfer's outcome."""

    congestion: str
    sack: bool
    loss: float
    ok: bool
    seconds: float
    goodput: float
    lost: int
    rexmit: int
    fast_recoveries: int
    timeouts: int

    @property
    def ratio(self) -> str:
        return f"{self.rexmit / self.lost:.2f}" if self.lost else "-"


class _RtoCounter:
    """Counts the active opener's retransmission timeouts (wraps ``TcpConnection._on_rto``)."""

    def __init__(self) -> None:
        self.count = 0
        self._orig = _connection.TcpConnection._on_rto

    def __enter__(self) -> _RtoCounter:
        orig = self._orig
        counter = self

        def on_rto(conn: _connection.TcpConnection, now: float) -> None:
            if not conn.passive:
                counter.count += 1
            orig(conn, now)

        _connection.TcpConnection._on_rto = on_rto  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        _connection.TcpConnection._on_rto = self._orig  # type: ignore[method-assign]


def run_one(
    congestion: str,
    sack: bool,
    loss: float,
    *,
    size: int,
    delay: float,
    rate: float,
    queue: int,
    seed: int,
) -> Row:
    """Transfer ``size`` bytes one way and measure it."""
    data_path = Impairment(loss=loss, delay=delay, rate=rate, queue_limit=queue)
    ack_path = Impairment(loss=loss, delay=delay, rate=rate, queue_limit=queue)
    options = Options(congestion=congestion, sack=sack, msl=1.0)
    sim = Simulator(seed=seed, c2s=data_path, s2c=ack_path, options=options)
    payload = random.Random(seed).randbytes(size)
    with _RtoCounter() as rtos:
        result = sim.transfer(payload, b"", timeout=10**7, wait_closed=False)
    info = result.client_info
    return Row(
        congestion=congestion,
        sack=sack,
        loss=loss,
        ok=result.intact,
        seconds=result.duration,
        goodput=size / result.duration / 1e6,
        lost=result.c2s.payload_dropped,
        rexmit=int(info["bytes_retransmitted"]),
        fast_recoveries=int(info["fast_retransmits"]),
        timeouts=rtos.count,
    )


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    head = (
        "| cc | SACK | loss | time s | goodput MB/s | lost B | rexmit B | rexmit/lost "
        "| FR | RTO | ok |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r.congestion} | {'on' if r.sack else 'off'} | {r.loss * 100:.0f} % "
            f"| {r.seconds:.2f} | {r.goodput:.4g} | {r.lost} | {r.rexmit} | {r.ratio} "
            f"| {r.fast_recoveries} | {r.timeouts} | {'yes' if r.ok else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table; returns 1 if a transfer did not deliver its data intact."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1 << 20, help="bytes (default 1 MiB)")
    parser.add_argument("--delay", type=float, default=0.01, help="one-way delay, s (0.01)")
    parser.add_argument("--rate", type=float, default=1.25e6, help="bytes/s (1.25e6: 10 Mbit/s)")
    parser.add_argument("--queue", type=int, default=64 * 1024, help="queue bytes (64 KiB)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--loss",
        type=lambda s: tuple(float(x) for x in s.split(",")),
        default=LOSS_RATES,
        help="comma-separated loss probabilities (default 0,0.01,0.05,0.1,0.2,0.3)",
    )
    args = parser.parse_args(argv)
    print(
        f"utcp.sim: {args.size} bytes one way, {args.delay * 1000:g} ms each way, "
        f"{args.rate * 8 / 1e6:g} Mbit/s bottleneck, {args.queue} B queue, "
        f"iid loss both ways, seed {args.seed}\n"
    )
    rows = []
    start = time.perf_counter()
    for congestion in ("newreno", "cubic"):
        for sack in (True, False):
            for loss in args.loss:
                rows.append(
                    run_one(
                        congestion,
                        sack,
                        loss,
                        size=args.size,
                        delay=args.delay,
                        rate=args.rate,
                        queue=args.queue,
                        seed=args.seed,
                    )
                )
    print(table(rows))
    print(f"\n({time.perf_counter() - start:.1f} s of wall time)")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
