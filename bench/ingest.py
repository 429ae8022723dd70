"""Ingest throughput: the real sources alone, then sources + lake writer, on the shared data sets.

Run: `.venv/bin/python bench/ingest.py [DATASETS]`. Prints events/s for parsing only and end to end
(parse, event ids, dedup, Parquet zstd, atomic publish) into a fresh lake in a temp directory.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from watchkeeper.lake import LakeWriter
from watchkeeper.sources.autodetect import read_inputs
from watchkeeper.sources.deadletter import DeadLetter

DATASETS = Path(
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("WATCHKEEPER_DATASETS", "../shared/datasets")
)
CASES = {
    "JSON lines (zeek-json)": ["zeek-wrccdc/zeek-json"],
    "syslog (auth.log x1)": ["elastic-examples/auth/auth.log"],
    "Zeek TSV (zeek-default)": ["zeek-wrccdc/zeek-default"],
}


def _parse(paths: list[str]) -> tuple[int, float]:
    start = time.process_time()
    n = sum(b.num_rows for b in read_inputs(paths, DeadLetter()))
    return n, time.process_time() - start


def _ingest(paths: list[str]) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as lake:
        start = time.process_time()
        with LakeWriter(Path(lake)) as writer:
            for batch in read_inputs(paths, DeadLetter()):
                writer.write(batch)
        spent = time.process_time() - start
    return sum(s.written for s in writer.stats.sources.values()), spent


def main() -> None:
    """Print parse-only and end-to-end events per CPU second for each case."""
    print(f"{'case':28} {'events':>9} {'parse ev/s':>12} {'lake ev/s':>12}  (CPU time, one process)")
    for name, rel in CASES.items():
        paths = [str(DATASETS / p) for p in rel]
        n, parse = _parse(paths)
        written, total = _ingest(paths)
        print(f"{name:28} {n:9,} {n / parse:12,.0f} {written / total:12,.0f}")


if __name__ == "__main__":
    main()
