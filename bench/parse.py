"""Parse throughput of the Windows sources: OTRF zips (flat JSON lines) and EVTX-ATTACK-SAMPLES.

Run: .venv/bin/python bench/parse.py [--limit N]   (prints events/s of CPU time and peak RSS)
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import time
from pathlib import Path

from watchkeeper.sources.autodetect import read_inputs
from watchkeeper.sources.deadletter import DeadLetter

DATASETS = Path(
    os.environ.get("WATCHKEEPER_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets")
)


def _run(label: str, paths: list[Path]) -> None:
    dead = DeadLetter()
    events = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in read_inputs(paths, dead):
        if batch.column("_source")[0].as_py().startswith("windows."):
            events += batch.num_rows
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        f"{label:<28} {events:>9,} events  {events / cpu:>9,.0f} ev/s cpu  {events / wall:>9,.0f} ev/s wall"
        f"  dead letters {dead.count}"
    )


def main() -> None:
    """Print events/s for the OTRF Windows archives and the EVTX samples, then peak RSS."""
    # Piped into `head`, stop quietly instead of with a BrokenPipeError.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=0, help="only the first N archives of each set")
    args = parser.parse_args()
    otrf = DATASETS / "security-datasets" / "datasets"
    archives = sorted(
        [
            *otrf.glob("atomic/windows/**/*.zip"),
            *otrf.glob("atomic/windows/**/*.tar.gz"),
            *otrf.glob("compound/**/*.zip"),
        ]
    )
    evtx_files = sorted((DATASETS / "evtx-attack-samples").rglob("*.evtx"))
    if not archives and not evtx_files:
        sys.exit(f"no data under {DATASETS}")
    if args.limit:
        archives, evtx_files = archives[: args.limit], evtx_files[: args.limit]
    _run("OTRF windows + compound", archives)
    _run("EVTX-ATTACK-SAMPLES", evtx_files)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
