"""Ingest throughput: the real sources alone, then sources + lake writer, on the shared data sets.

Run: `.venv/bin/python bench/ingest.py [DATASETS]`. Prints events/s for parsing only and end to end
(parse, event ids, dedup, Parquet zstd, atomic publish) into a fresh lake in a temp directory;
each figure is the best of `REPEAT` runs, in CPU time of this one process.

auth.log alone is 7,121 lines over 25 days: its figure is dominated by the fixed cost of 25
partitions. The "20 hosts" case measures the steady state on a central syslog file: the same
lines as if 20 servers had logged them (host names suffixed -0 … -19), interleaved in time order.

The last line is `ingest --jobs 2` on zeek-json: two worker processes parse, this one writes the
lake. Its figure is in wall-clock time (all processes together), beside the wall-clock time of
the same ingest in one process.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

from watchkeeper.ingest_parallel import ingest_parallel
from watchkeeper.lake import LakeWriter
from watchkeeper.runtime import configure_process
from watchkeeper.sources.autodetect import read_inputs
from watchkeeper.sources.base import DEFAULT_BATCH_SIZE
from watchkeeper.sources.deadletter import DeadLetter

DATASETS = Path(
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("WATCHKEEPER_DATASETS", "../shared/datasets")
)
AUTH_LOG = "elastic-examples/auth/auth.log"
HOSTS = 20
REPEAT = 3
CASES = {
    "JSON lines (zeek-json)": ["zeek-wrccdc/zeek-json"],
    "syslog (auth.log)": [AUTH_LOG],
    f"syslog (auth.log, {HOSTS} hosts)": ["<hosts>"],
    "Zeek TSV (zeek-default)": ["zeek-wrccdc/zeek-default"],
}
JOBS = 2
JOBS_CASE = "JSON lines (zeek-json)"
_HOST = re.compile(rb"^(\w{3} [ \d]\d \d\d:\d\d:\d\d) (\S+)")


def _many_hosts(out: Path) -> Path:
    """auth.log as if `HOSTS` servers had written it, interleaved in time order, into `out`."""
    lines = (DATASETS / AUTH_LOG).read_bytes().splitlines()
    with out.open("wb") as fh:
        for line in lines:
            for k in range(HOSTS):
                fh.write(_HOST.sub(lambda m, k=k: m.group(1) + b" " + m.group(2) + b"-%d" % k, line, count=1))
                fh.write(b"\n")
    return out


def _parse(paths: list[str]) -> tuple[int, float]:
    best = float("inf")
    for _ in range(REPEAT):
        start = time.process_time()
        n = sum(b.num_rows for b in read_inputs(paths, DeadLetter()))
        best = min(best, time.process_time() - start)
    return n, best


def _ingest(paths: list[str]) -> tuple[int, float]:
    best = float("inf")
    for _ in range(REPEAT):
        with tempfile.TemporaryDirectory() as lake:
            start = time.process_time()
            with LakeWriter(Path(lake)) as writer:
                for batch in read_inputs(paths, DeadLetter()):
                    writer.write(batch)
            best = min(best, time.process_time() - start)
    return sum(s.written for s in writer.stats.sources.values()), best


def _ingest_wall(paths: list[str], jobs: int) -> tuple[int, float]:
    """Best wall-clock seconds of the whole ingest, in one process (`jobs` 1) or with workers."""
    best = float("inf")
    for _ in range(REPEAT):
        with tempfile.TemporaryDirectory() as lake:
            start = time.perf_counter()
            with LakeWriter(Path(lake)) as writer:
                if jobs == 1 or not ingest_parallel([Path(p) for p in paths], writer, DeadLetter(), jobs,
                                                    DEFAULT_BATCH_SIZE):
                    for batch in read_inputs(paths, DeadLetter()):
                        writer.write(batch)
            best = min(best, time.perf_counter() - start)
    return sum(s.written for s in writer.stats.sources.values()), best


def main() -> None:
    """Print parse-only and end-to-end events per CPU second for each case."""
    if not os.environ.get("WATCHKEEPER_BENCH_DEFAULT_MALLOC"):
        configure_process()  # as the CLI does
    print(f"{'case':30} {'events':>9} {'parse ev/s':>12} {'lake ev/s':>12}  (CPU time, one process)")
    with tempfile.TemporaryDirectory() as scratch:
        hosts = _many_hosts(Path(scratch) / "auth.log")
        for name, rel in CASES.items():
            paths = [str(hosts) if p == "<hosts>" else str(DATASETS / p) for p in rel]
            n, parse = _parse(paths)
            written, total = _ingest(paths)
            print(f"{name:30} {n:9,} {n / parse:12,.0f} {written / total:12,.0f}")
        paths = [str(DATASETS / p) for p in CASES[JOBS_CASE]]
        written, one = _ingest_wall(paths, 1)
        _, many = _ingest_wall(paths, JOBS)
        print(f"{f'{JOBS_CASE}, --jobs {JOBS}':30} {written:9,} {'':12} {written / many:12,.0f}"
              f"  (wall clock; one process: {written / one:,.0f})")


if __name__ == "__main__":
    main()
