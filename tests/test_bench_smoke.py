"""Smoke test of the benchmark suite: ``python -m bench --quick`` on a fast subset.

It runs the real command line in a subprocess (the suite calls ``trio.run``
itself, once per scenario run) and checks the exit status and the JSON file.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBSET = ["bulk_utcp", "echo_utcp", "echo_tcp", "demux"]


def test_quick_subset_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--repeat",
            "1",
            "--only",
            "bulk_utcp,echo,demux",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the one table, with a header and the ratio rows for the pairs we ran
    assert "scenario" in proc.stdout and "median" in proc.stdout
    assert "echo p50 utcp / kernel" in proc.stdout
    assert "demux ACK 10k / 10" in proc.stdout

    doc = json.loads(out.read_text())  # strict JSON: no NaN
    for key in ("timestamp", "machine", "sizes", "scenarios", "summary"):
        assert key in doc
    assert doc["quick"] is True and doc["repeat"] == 1
    assert doc["machine"]["python"] and doc["machine"]["trio"]
    assert sorted(doc["scenarios"]) == sorted(SUBSET)  # "echo" selects both echo scenarios
    for name in SUBSET:
        runs = doc["scenarios"][name]["runs"]
        assert len(runs) == 1
        assert runs[0]["status"] == "ok", runs[0]
        for value in runs[0]["values"].values():
            assert isinstance(value, float) and math.isfinite(value) and value > 0
    bulk = doc["scenarios"]["bulk_utcp"]["runs"][0]["values"]["mbps"]
    assert bulk > 0.5  # 2 MB must not take seconds
    ratios = {r["label"]: r for r in doc["summary"]["ratios"]}
    assert ratios["demux ACK 10k / 10"]["n"] == 1
    assert "pass" in ratios["echo p50 utcp / kernel"]
