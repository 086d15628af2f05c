"""The scenario registry, the same-run ratios and the targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import peer, quic_support, s_bulk, s_connrate, s_demux, s_echo, s_loss, s_scale
from .common import Metric, Scenario, Sizes

_MBPS = [Metric("mbps", "throughput", "MB/s")]


def _t(full: float) -> Callable[[Sizes], float]:
    """A timeout of ``full`` seconds at full size, scaled down for --quick (min 20 s)."""
    return lambda sizes: max(20.0, full * sizes.timeout_scale)


def _doc(obj: object) -> str:
    return " ".join((obj.__doc__ or "").split())


def all_scenarios() -> list[Scenario]:
    """Every scenario, in the order they run within a round."""
    return [
        Scenario(
            "bulk_utcp",
            "bulk, utcp, one process",
            _doc(s_bulk.bulk_utcp) + " " + _doc(s_bulk),
            _MBPS,
            s_bulk.bulk_utcp,
            _t(150),
        ),
        Scenario(
            "bulk_utcp_2proc",
            "bulk, utcp, two processes",
            _doc(s_bulk.bulk_utcp_2proc),
            _MBPS,
            s_bulk.bulk_utcp_2proc,
            _t(150),
        ),
        Scenario(
            "bulk_udp", "bulk, raw Trio UDP", _doc(s_bulk.bulk_udp), _MBPS, s_bulk.bulk_udp, _t(120)
        ),
        Scenario(
            "bulk_tcp",
            "bulk, kernel TCP via Trio",
            _doc(s_bulk.bulk_tcp),
            _MBPS,
            s_bulk.bulk_tcp,
            _t(60),
        ),
        Scenario(
            "bulk_quic",
            "bulk, aioquic one stream",
            _doc(s_bulk.bulk_quic) + " " + _doc(quic_support),
            _MBPS,
            s_bulk.bulk_quic,
            _t(240),
        ),
        Scenario(
            "echo_utcp",
            "1-byte echo, utcp",
            _doc(s_echo),
            [Metric("p50_us", "RTT p50", "µs"), Metric("p99_us", "RTT p99", "µs")],
            s_echo.echo_utcp,
            _t(60),
        ),
        Scenario(
            "echo_tcp",
            "1-byte echo, kernel TCP",
            _doc(s_echo),
            [Metric("p50_us", "RTT p50", "µs"), Metric("p99_us", "RTT p99", "µs")],
            s_echo.echo_tcp,
            _t(60),
        ),
        Scenario(
            "connrate_utcp",
            "connect+close, utcp",
            _doc(s_connrate),
            [
                Metric("seq_cps", "sequential", "conn/s", "{:.0f}"),
                Metric("conc_cps", "50 concurrent", "conn/s", "{:.0f}"),
            ],
            s_connrate.connrate_utcp,
            _t(90),
        ),
        Scenario(
            "connrate_tcp",
            "connect+close, kernel TCP",
            _doc(s_connrate),
            [
                Metric("seq_cps", "sequential", "conn/s", "{:.0f}"),
                Metric("conc_cps", "50 concurrent", "conn/s", "{:.0f}"),
            ],
            s_connrate.connrate_tcp,
            _t(90),
        ),
        Scenario(
            "idle",
            "idle established connections",
            _doc(s_scale.idle) + " " + _doc(peer),
            [
                Metric("kib_per_conn", "memory / connection", "KiB", "{:.2f}"),
                Metric("idle_cpu_pct", "idle CPU, steady (of 1 core)", "%", "{:.2f}"),
                Metric("post_setup_cpu_pct", "idle CPU, first window", "%", "{:.2f}"),
            ],
            s_scale.idle,
            _t(240),
        ),
        Scenario(
            "timewait",
            "TIME_WAIT entries",
            _doc(s_scale.timewait),
            [
                Metric("kib_per_entry", "memory / entry", "KiB", "{:.2f}"),
                Metric("setup_cps", "create+close rate", "conn/s", "{:.0f}"),
            ],
            s_scale.timewait,
            _t(400),
        ),
        Scenario(
            "multi",
            "concurrent bulk connections",
            _doc(s_scale.multi),
            [
                Metric("aggregate_mbps", "aggregate", "MB/s"),
                Metric("jain", "Jain fairness", "", "{:.3f}"),
            ],
            s_scale.multi,
            _t(150),
        ),
        Scenario(
            "loss",
            "bulk through chaos relay",
            _doc(s_loss),
            [
                Metric("loss0_mbps", "0% loss (relay only)", "MB/s", "{:.2f}"),
                Metric("loss0_retx", "0% retransmits", "", "{:.0f}"),
                Metric("loss1_mbps", "1% loss", "MB/s", "{:.2f}"),
                Metric("loss1_retx", "1% retransmits", "", "{:.0f}"),
                Metric("loss5_mbps", "5% loss", "MB/s", "{:.2f}"),
                Metric("loss5_retx", "5% retransmits", "", "{:.0f}"),
            ],
            s_loss.loss,
            _t(300),
        ),
        Scenario(
            "demux",
            "per-segment receive cost (sans-IO)",
            _doc(s_demux),
            [
                Metric("ack_us_small", "pure ACK, 10 conns", "µs/seg", "{:.2f}"),
                Metric("ack_us_large", "pure ACK, 10k conns", "µs/seg", "{:.2f}"),
                Metric("data_us_small", "64 B data, 10 conns", "µs/seg", "{:.2f}"),
                Metric("data_us_large", "64 B data, 10k conns", "µs/seg", "{:.2f}"),
            ],
            s_demux.demux,
            _t(120),
        ),
    ]


@dataclass(frozen=True)
class Ratio:
    """``num / den``, computed run by run (same round) and summarised like a metric."""

    label: str
    num: tuple[str, str]
    den: tuple[str, str]
    target: str | None = None  # ">= 4", "<= 2.5"


RATIOS = [
    Ratio("utcp / aioquic", ("bulk_utcp", "mbps"), ("bulk_quic", "mbps"), ">= 4"),
    Ratio("utcp / raw Trio UDP", ("bulk_utcp", "mbps"), ("bulk_udp", "mbps"), ">= 0.8"),
    Ratio("utcp / kernel TCP", ("bulk_utcp", "mbps"), ("bulk_tcp", "mbps")),
    Ratio("utcp 2 proc / 1 proc", ("bulk_utcp_2proc", "mbps"), ("bulk_utcp", "mbps")),
    Ratio("echo p50 utcp / kernel", ("echo_utcp", "p50_us"), ("echo_tcp", "p50_us"), "<= 2.5"),
    Ratio("echo p99 utcp / kernel", ("echo_utcp", "p99_us"), ("echo_tcp", "p99_us")),
    Ratio(
        "seq conn/s utcp / kernel",
        ("connrate_utcp", "seq_cps"),
        ("connrate_tcp", "seq_cps"),
        ">= 0.3",
    ),
    Ratio("conc conn/s utcp / kernel", ("connrate_utcp", "conc_cps"), ("connrate_tcp", "conc_cps")),
    Ratio(
        "multi aggregate / one conn", ("multi", "aggregate_mbps"), ("bulk_utcp", "mbps"), ">= 0.8"
    ),
    Ratio("1% loss / relay no loss", ("loss", "loss1_mbps"), ("loss", "loss0_mbps")),
    Ratio("5% loss / relay no loss", ("loss", "loss5_mbps"), ("loss", "loss0_mbps")),
    Ratio("demux ACK 10k / 10", ("demux", "ack_us_large"), ("demux", "ack_us_small"), "<= 1.5"),
    Ratio("demux data 10k / 10", ("demux", "data_us_large"), ("demux", "data_us_small"), "<= 1.5"),
]

#: Targets on plain metrics: (scenario, metric) -> condition.
METRIC_TARGETS = {
    ("idle", "kib_per_conn"): "<= 16",
    ("idle", "idle_cpu_pct"): "<= 1",
    ("timewait", "kib_per_entry"): "<= 1",
    ("multi", "jain"): ">= 0.9",
}


def check(target: str, value: float) -> bool:
    op, _, num = target.partition(" ")
    x = float(num)
    return value >= x if op == ">=" else value <= x


def describe_sizes(sizes: Sizes) -> str:
    return (
        f"bulk {sizes.bulk_bytes / 1e6:g} MB (aioquic {sizes.quic_bytes / 1e6:g} MB), "
        f"echo {sizes.echo_trips} trips, connect+close {sizes.conn_seq} sequential / "
        f"{sizes.conn_concurrent_total} with {sizes.conn_concurrency} concurrent, "
        f"idle {sizes.idle_conns} conns over {sizes.idle_window:g} s, "
        f"TIME_WAIT {sizes.tw_entries}, multi {sizes.multi_conns} x "
        f"{sizes.multi_bytes_each / 1e6:g} MB, loss {sizes.loss_bytes / 1e6:g} MB, "
        f"demux {sizes.demux_small} vs {sizes.demux_large} conns"
    )
