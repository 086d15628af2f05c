"""Command line, round-robin execution, the results table and the JSON file."""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from typing import Any

import trio

from .common import FULL, QUICK, ROOT, Scenario, Sizes, Unavailable, median
from .scenarios import METRIC_TARGETS, RATIOS, all_scenarios, check, describe_sizes

DEFAULT_JSON = os.path.join(ROOT, "bench", "results", "latest.json")

NOTES = [
    "MB = 10**6 bytes. Each scenario runs once per round, rounds repeat --repeat times;",
    "ratios are computed per round (same-run pairs), then summarised as median and min–max.",
    "connrate: server closes first; utcp server msl=0.01 (TIME_WAIT 20 ms, expiry inside the",
    "  timing); kernel TCP's 60 s TIME_WAIT stays in the kernel, outside the timing.",
    "bulk_udp: one `await sendto`/`await recv` per 1452-byte datagram, windowed by receiver",
    "  reports; utcp batches its socket I/O (GSO/GRO, no checkpoint per datagram), so can beat it.",
    "idle/timewait: measured in a child process: RSS growth / N after gc.collect(), per",
    "  connection end (the child holds one end of each connection); TIME_WAIT with msl=3600.",
    "  Idle CPU 'steady' is sampled once rto_initial+0.2 s has passed since setup ended.",
    "loss: client -> utcp.chaos relay (iid loss both directions) -> server; retransmits are",
    "  the sender's info()['total_retransmits']; see JSON extra_segments for an independent count.",
]


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "trio": trio.__version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_total_kib"] = int(f.readline().split()[1])
    except OSError:
        pass
    try:
        import aioquic

        info["aioquic"] = aioquic.__version__
    except ImportError:
        info["aioquic"] = None
    import utcp

    info["utcp"] = utcp.__version__
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        # utcp/ edited but not committed: the commit alone does not identify the code
        info["git_dirty"] = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "utcp"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _select(names: str | None, scenarios: list[Scenario]) -> list[Scenario]:
    if not names:
        return scenarios
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    chosen: list[Scenario] = []
    for w in wanted:
        hits = [s for s in scenarios if s.name == w]
        if not hits:  # not a name: a group prefix ("bulk", "echo") or "all"
            hits = [s for s in scenarios if s.name.startswith(w + "_") or w == "all"]
        if not hits:
            known = ", ".join(s.name for s in scenarios)
            raise SystemExit(f"unknown scenario {w!r}; known: {known} (or a prefix like 'bulk')")
        for h in hits:
            if h not in chosen:
                chosen.append(h)
    return [s for s in scenarios if s in chosen]  # keep the canonical order


def _leaf(exc: BaseException) -> BaseException:
    """The first non-group exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def _bounded(scenario: Scenario, sizes: Sizes) -> dict[str, Any]:
    with trio.fail_after(scenario.timeout(sizes)):
        return await scenario.run(sizes)


def _run_once(scenario: Scenario, sizes: Sizes, round_no: int) -> dict[str, Any]:
    gc.collect()
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"round": round_no}
    try:
        out = trio.run(_bounded, scenario, sizes)
    except Unavailable as exc:
        rec.update(status="n/a", reason=str(exc))
    except trio.TooSlowError:
        rec.update(status="error", error=f"timed out after {scenario.timeout(sizes):g} s")
    except Exception as exc:
        leaf = _leaf(exc)
        if isinstance(leaf, Unavailable):
            rec.update(status="n/a", reason=str(leaf))
        elif isinstance(leaf, trio.TooSlowError):
            rec.update(status="error", error=f"timed out after {scenario.timeout(sizes):g} s")
        else:
            rec.update(
                status="error",
                error=f"{type(leaf).__name__}: {leaf}",
                traceback="".join(traceback.format_exception(leaf, limit=12)),
            )
    else:
        rec["status"] = "ok"
        rec["values"] = {m.key: float(out[m.key]) for m in scenario.metrics}
        if "notes" in out:
            rec["notes"] = out["notes"]
        if "extra" in out:
            rec["extra"] = out["extra"]
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def _values(scenario: Scenario, key: str) -> dict[int, float]:
    return {r["round"]: r["values"][key] for r in scenario.runs if r["status"] == "ok"}


def _stats(vals: list[float]) -> dict[str, Any]:
    return {"median": median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def summarise(selected: list[Scenario]) -> dict[str, Any]:
    by_name = {s.name: s for s in selected}
    metrics: list[dict[str, Any]] = []
    for s in selected:
        na = [r for r in s.runs if r["status"] == "n/a"]
        errors = [r for r in s.runs if r["status"] == "error"]
        for m in s.metrics:
            vals = list(_values(s, m.key).values())
            row: dict[str, Any] = {
                "scenario": s.name,
                "metric": m.key,
                "label": m.label,
                "unit": m.unit,
                "fmt": m.fmt,
            }
            if vals:
                row.update(_stats(vals))
            elif na:
                row["na"] = na[0]["reason"]
            else:
                row["error"] = errors[0]["error"] if errors else "no runs"
            target = METRIC_TARGETS.get((s.name, m.key))
            if target:
                row["target"] = target
                if vals:
                    row["pass"] = check(target, row["median"])
            metrics.append(row)
    ratios: list[dict[str, Any]] = []
    for ratio in RATIOS:
        a, b = by_name.get(ratio.num[0]), by_name.get(ratio.den[0])
        if a is None or b is None:
            continue
        num, den = _values(a, ratio.num[1]), _values(b, ratio.den[1])
        per_round = [num[r] / den[r] for r in sorted(num) if r in den and den[r]]
        row = {"label": ratio.label, "num": list(ratio.num), "den": list(ratio.den)}
        if per_round:
            row.update(_stats(per_round), per_round=per_round)
        else:
            row["na"] = "no pair of successful runs"
        if ratio.target:
            row["target"] = ratio.target
            if per_round:
                row["pass"] = check(ratio.target, row["median"])
        ratios.append(row)
    return {"metrics": metrics, "ratios": ratios}


def _fmt(fmt: str, v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return fmt.format(v)


def _target_text(t: str | None) -> str:
    if not t:
        return ""
    return t.replace(">=", "≥").replace("<=", "≤")


def render(summary: dict[str, Any]) -> str:
    head = ("scenario", "metric", "median", "min–max", "target", "result")
    rows: list[tuple[str, ...]] = []
    last = None
    for m in summary["metrics"]:
        name = m["scenario"] if m["scenario"] != last else ""
        last = m["scenario"]
        label = f"{m['label']} ({m['unit']})" if m["unit"] else m["label"]
        if "median" in m:
            f = m["fmt"]
            med = _fmt(f, m["median"])
            rng = f"{_fmt(f, m['min'])}–{_fmt(f, m['max'])}"
        elif "na" in m:
            med, rng = "n/a", f"({m['na']})"
        else:
            med, rng = "ERROR", m["error"][:60]
        res = "" if "pass" not in m else ("PASS" if m["pass"] else "MISS")
        rows.append((name, label, med, rng, _target_text(m.get("target")), res))
    if summary["ratios"]:
        rows.append(("", "", "", "", "", ""))
        first = True
        for r in summary["ratios"]:
            name = "ratio (same run)" if first else ""
            first = False
            if "median" in r:
                med = f"{r['median']:.2f}×"
                rng = f"{r['min']:.2f}–{r['max']:.2f}"
            else:
                med, rng = "n/a", ""
            res = "" if "pass" not in r else ("PASS" if r["pass"] else "MISS")
            target = _target_text(r.get("target"))
            rows.append((name, r["label"], med, rng, f"{target}×" if target else "", res))
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    widths[3] = min(widths[3], 64)

    def line(cells: tuple[str, ...]) -> str:
        out = []
        for i, c in enumerate(cells):
            out.append(c.rjust(widths[i]) if i == 2 else c.ljust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    return str(obj)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="utcp benchmark suite: one table of medians, ranges, ratios and targets.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    parser.add_argument("--repeat", type=int, default=3, metavar="N", help="runs per scenario")
    parser.add_argument(
        "--only", metavar="NAME[,NAME]", help="scenarios to run (a name or a prefix: bulk, echo...)"
    )
    parser.add_argument("--json", metavar="PATH", default=DEFAULT_JSON, help="results file")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    scenarios = all_scenarios()
    if args.list:
        for s in scenarios:
            print(f"{s.name:16} {s.title}")
        return 0
    selected = _select(args.only, scenarios)
    sizes = QUICK if args.quick else FULL
    started = datetime.datetime.now(datetime.UTC)
    load_start = _loadavg()
    t_start = time.perf_counter()
    print(
        f"utcp bench: {'quick' if args.quick else 'full'} sizes, {args.repeat} round(s), "
        f"{len(selected)} scenario(s)",
        file=sys.stderr,
    )
    print(f"  sizes: {describe_sizes(sizes)}", file=sys.stderr)
    unavailable: set[str] = set()
    for rnd in range(args.repeat):
        for s in selected:
            if s.name in unavailable:
                continue
            rec = _run_once(s, sizes, rnd)
            s.runs.append(rec)
            if rec["status"] == "ok":
                shown = ", ".join(f"{m.key}={_fmt(m.fmt, rec['values'][m.key])}" for m in s.metrics)
            elif rec["status"] == "n/a":
                unavailable.add(s.name)
                shown = f"n/a ({rec['reason']})"
            else:
                shown = f"ERROR {rec['error']}"
            print(
                f"  [{rnd + 1}/{args.repeat}] {s.name}: {shown} ({rec['seconds']:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.perf_counter() - t_start
    load_end = _loadavg()
    summary = summarise(selected)
    table = render(summary)
    print()
    print(table)
    print()
    for n in NOTES:
        print(n)
    errors = [(s.name, r) for s in selected for r in s.runs if r["status"] == "error"]
    for name, r in errors:
        print(f"ERROR in {name} (round {r['round'] + 1}): {r['error']}")
    print(
        f"total time {elapsed:.1f} s; 1-min load average {load_start} at start, {load_end} at end"
        f" on {os.cpu_count()} CPUs (other load on the machine skews absolute numbers)"
    )

    doc = {
        "timestamp": started.isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "quick": args.quick,
        "repeat": args.repeat,
        "sizes": sizes.__dict__,
        "total_seconds": round(elapsed, 2),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "machine": _machine(),
        "scenarios": {
            s.name: {
                "title": s.title,
                "method": s.method,
                "timeout_seconds": s.timeout(sizes),
                "metrics": {m.key: {"label": m.label, "unit": m.unit} for m in s.metrics},
                "runs": s.runs,
            }
            for s in selected
        },
        "summary": summary,
        "table": table,
    }
    path = args.json
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_clean(doc), f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)
    print(f"results written to {path}")
    return 1 if errors else 0
