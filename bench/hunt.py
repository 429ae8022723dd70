"""End-to-end `watchkeeper hunt` figures on the shared data, against the issue's targets.

Run: `.venv/bin/python bench/hunt.py [DATASETS]` (one heavy run at a time; about 4 minutes on two
cores). Each figure is one CLI run in a child process, timed by wall clock, its peak RSS read from
`getrusage(RUSAGE_CHILDREN)` (children are measured one at a time: the maximum so far only grows,
so each run starts in a fresh process of this script).

- (a) EVTX-ATTACK-SAMPLES (277 EVTX files), SigmaHQ Windows rules: cold cache and warm cache.
- (b) OTRF Security-Datasets Windows zips: events/s end to end and peak RSS, on all the zips and on
      every other zip (about half), to show memory does not grow with the input.
- (c) compiling the rules into an empty cache, with no input.
- (d) the OTRF zips again with `--jobs 2`: both cores, for comparison (no target).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DATASETS = Path(
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("WATCHKEEPER_DATASETS", "../shared/datasets")
)
RULES = DATASETS / "sigma" / "rules" / "windows"

TARGET_EVTX_WARM_S = 2.3
TARGET_OTRF_EVENTS_PER_S = 30_000
TARGET_COLD_COMPILE_S = 20.0
TARGET_PEAK_RSS_MB = 400.0


@dataclass(frozen=True)
class Run:
    """One measured CLI run."""

    seconds: float
    peak_rss_mb: float
    events: int


def _measure(paths: list[Path], cache: Path, out: Path, *extra: str) -> Run:
    """Run one hunt in a fresh interpreter that reports its child's wall time and peak RSS."""
    probe = (
        "import json, resource, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "with open(sys.argv[1], 'w') as fh:\n"
        "    subprocess.run(sys.argv[2:], check=True, stdout=fh)\n"
        "wall = time.perf_counter() - start\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'seconds': wall, 'rss': rss}))\n"
    )
    summary = out.with_suffix(".summary")
    command = [
        sys.executable,
        "-c",
        probe,
        str(summary),
        sys.executable,
        "-m",
        "watchkeeper",
        "hunt",
        *map(str, paths),
        "--rules",
        str(RULES),
        "--format",
        "jsonl",
        "--output",
        str(out),
        *extra,
    ]
    env = {**os.environ, "WATCHKEEPER_CACHE": str(cache), "COLUMNS": "200"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return Run(figures["seconds"], figures["rss"], _events_read(summary))


def _events_read(summary: Path) -> int:
    """The `Events read N` figure of the hunt's printed summary (0 when absent)."""
    for line in summary.read_text(encoding="utf-8", errors="replace").splitlines():
        if "Events read" in line:
            return int(line.split("Events read", 1)[1].split()[0].replace(",", ""))
    return 0


def _compile_only(cache: Path) -> float:
    """Seconds to compile the rules into an empty cache (no input is read)."""
    code = (
        "import sys, time; from pathlib import Path; from watchkeeper.detect.sigma.loader import load_rules;"
        "t = time.perf_counter(); rs = load_rules([Path(sys.argv[1])]);"
        "print(time.perf_counter() - t, len(rs.rules))"
    )
    env = {**os.environ, "WATCHKEEPER_CACHE": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(RULES)], env=env, capture_output=True, text=True, check=True
    )
    seconds, count = done.stdout.split()
    print(f"  ({count} rules compiled)")
    return float(seconds)


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> None:
    """Measure and print every figure beside its target."""
    evtx = sorted((DATASETS / "evtx-attack-samples").rglob("*.evtx"))
    root = DATASETS / "security-datasets" / "datasets"
    otrf = sorted([*(root / "atomic" / "windows").rglob("*.zip"), *(root / "compound").rglob("*.zip")])
    print(f"{os.cpu_count()} CPUs; {len(evtx)} EVTX files; {len(otrf)} OTRF Windows zips; rules {RULES}")
    with tempfile.TemporaryDirectory(prefix="wk-bench-") as tmp:
        work = Path(tmp)
        print("(c) cold compile")
        cold_compile = _compile_only(work / "cache-compile")
        print(
            f"    {cold_compile:6.1f} s   target < {TARGET_COLD_COMPILE_S:.0f} s   "
            f"{_verdict(cold_compile < TARGET_COLD_COMPILE_S)}"
        )

        cache = work / "cache"
        cold = _measure(evtx, cache, work / "evtx-cold.jsonl")
        warm = _measure(evtx, cache, work / "evtx-warm.jsonl")
        print("(a) EVTX-ATTACK-SAMPLES end to end")
        print(
            f"    cold cache {cold.seconds:6.2f} s  ({cold.events:,} events, peak {cold.peak_rss_mb:.0f} MB)"
        )
        print(
            f"    warm cache {warm.seconds:6.2f} s  ({warm.events:,} events, peak {warm.peak_rss_mb:.0f} MB)   "
            f"target <= {TARGET_EVTX_WARM_S} s   {_verdict(warm.seconds <= TARGET_EVTX_WARM_S)}"
        )

        print("(b) OTRF Windows JSON end to end (warm cache)")
        for label, paths in (("all zips", otrf), ("every other zip", otrf[::2])):
            run = _measure(paths, cache, work / "otrf.jsonl")
            rate = run.events / run.seconds if run.seconds else 0.0
            print(
                f"    {label:16} {run.events:9,} events {run.seconds:7.1f} s {rate:9,.0f} ev/s  "
                f"peak {run.peak_rss_mb:5.0f} MB   targets >= {TARGET_OTRF_EVENTS_PER_S:,} ev/s "
                f"{_verdict(rate >= TARGET_OTRF_EVENTS_PER_S)}, < {TARGET_PEAK_RSS_MB:.0f} MB "
                f"{_verdict(run.peak_rss_mb < TARGET_PEAK_RSS_MB)}"
            )
        # Not an issue target (those are for one core): what a responder with more cores gets.
        run = _measure(otrf, cache, work / "otrf-jobs.jsonl", "--jobs", "2")
        rate = run.events / run.seconds if run.seconds else 0.0
        print("(d) OTRF Windows JSON, --jobs 2 (both cores, warm cache)")
        print(
            f"    {'all zips':16} {run.events:9,} events {run.seconds:7.1f} s {rate:9,.0f} ev/s  "
            f"peak {run.peak_rss_mb:5.0f} MB (the largest process; every worker holds about as much)"
        )
    started = time.strftime("%Y-%m-%d %H:%M")
    print(f"measured {started}; the machine is shared, so repeat when it is quiet")


if __name__ == "__main__":
    main()
