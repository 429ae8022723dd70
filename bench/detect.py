"""Detection speed of the Sigma engine alone on OTRF Windows events, with a per-rule breakdown.

Run: `python bench/detect.py [--zips N | --every K] [--repeat R] [--top T] [--save DIR | --load DIR]`

The OTRF Windows zips are parsed once and coalesced exactly as `hunt` feeds the engine; then
`SigmaEngine.detect` is timed alone: CPU time of one pass over all batches by a fresh engine, as
one hunt makes (plans, automata and what the engine learns per batch included), min of
`--repeat` passes after one warm-up pass (the process's own caches: compiled patterns). A last, instrumented run attributes time to each rule's evaluation
(including the leaves it is first to compute) and to the rest (column preparation, logsource
routing, literal scans run by prefilters). `hits` and `digest` summarise the result so a change
can be checked for identical output at a glance.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from watchkeeper.detect.sigma import evaluate
from watchkeeper.detect.sigma.engine import Hit, SigmaEngine
from watchkeeper.detect.sigma.loader import load_rules
from watchkeeper.detect.sigma.nodes import CompiledRule, Node
from watchkeeper.hunt import COALESCE_ROWS, coalesce
from watchkeeper.sources import load_all
from watchkeeper.sources.autodetect import read_inputs
from watchkeeper.sources.deadletter import DeadLetter

DATASETS = Path(
    os.environ.get("WATCHKEEPER_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets")
)


def _archives(zips: int, every: int) -> list[Path]:
    root = DATASETS / "security-datasets" / "datasets"
    found = sorted([*root.glob("atomic/windows/**/*.zip"), *root.glob("compound/**/*.zip")])
    found = found[::every]
    return found[:zips] if zips else found


def _batches(args: argparse.Namespace) -> list[pa.RecordBatch]:
    if args.load:
        out = []
        for path in sorted(Path(args.load).glob("*.arrow")):
            with pa.ipc.open_stream(path) as reader:
                out.extend(reader)
        return out
    paths = _archives(args.zips, args.every)
    if not paths:
        sys.exit(f"no OTRF zips under {DATASETS}")
    stream = read_inputs(paths, DeadLetter())
    out = [b for b in coalesce(stream, COALESCE_ROWS) if b.column("_source")[0].as_py().startswith("windows.")]
    if args.save:
        Path(args.save).mkdir(parents=True, exist_ok=True)
        for i, batch in enumerate(out):
            with pa.ipc.new_stream(Path(args.save) / f"{i:05}.arrow", batch.schema) as writer:
                writer.write_batch(batch)
    return out


def _run(rules: list[CompiledRule], batches: list[pa.RecordBatch]) -> tuple[float, list[list[Hit]]]:
    started = time.process_time()
    engine = SigmaEngine(rules, load_all())
    results = [engine.detect(b) for b in batches]
    return time.process_time() - started, results


def _digest(results: list[list[Hit]]) -> tuple[int, str]:
    h = hashlib.sha256()
    pairs = 0
    for i, hits in enumerate(results):
        for hit in sorted(hits, key=lambda x: (x.rule.id, x.rule.path)):
            pairs += len(hit.rows)
            h.update(f"{i}\0{hit.rule.id}\0{hit.rule.path}\0".encode())
            h.update(hit.rows.astype("int64").tobytes())
    return pairs, h.hexdigest()[:16]


def _profile(rules: list[CompiledRule], batches: list[pa.RecordBatch]) -> tuple[float, Counter[str]]:
    """One run with each top-level `BatchMatcher.evaluate` call timed and charged to its rule."""
    names: dict[int, str] = {id(r.condition): f"{r.title} [{r.logsource}]" for r in rules}
    spent: Counter[str] = Counter()
    depth = [0]
    original: Callable[..., Any] = evaluate.BatchMatcher.evaluate

    def timed(self: evaluate.BatchMatcher, node: Node) -> Any:
        if depth[0]:
            return original(self, node)
        depth[0] += 1
        started = time.process_time()
        try:
            return original(self, node)
        finally:
            spent[names.get(id(node), "(other evaluations)")] += time.process_time() - started
            depth[0] -= 1

    evaluate.BatchMatcher.evaluate = timed  # type: ignore[method-assign]
    try:
        total, _ = _run(rules, batches)
    finally:
        evaluate.BatchMatcher.evaluate = original  # type: ignore[method-assign]
    return total, spent


def main() -> None:
    """Parse, then time detection and print µs/event, events/s and the costliest rules."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zips", type=int, default=0, help="only the first N zips (after --every)")
    parser.add_argument("--every", type=int, default=1, help="every K-th zip")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (the minimum is reported)")
    parser.add_argument("--top", type=int, default=25, help="rules to list in the breakdown (0: no profile)")
    parser.add_argument("--rules", type=Path, default=DATASETS / "sigma" / "rules" / "windows")
    parser.add_argument("--save", help="also write the parsed batches to this folder (Arrow IPC)")
    parser.add_argument("--load", help="read batches written by --save instead of parsing")
    args = parser.parse_args()

    started = time.process_time()
    batches = _batches(args)
    events = sum(b.num_rows for b in batches)
    print(f"{len(batches)} batches, {events:,} events, parsed/loaded in {time.process_time() - started:.1f} s cpu")
    rules = load_rules([args.rules]).rules
    print(f"{len(rules)} rules")

    warm, results = _run(rules, batches)
    pairs, digest = _digest(results)
    print(f"warm-up {warm:.2f} s cpu; hits {pairs:,} (rule, event) pairs, digest {digest}")
    best = float("inf")
    for _ in range(max(1, args.repeat)):
        seconds, results = _run(rules, batches)
        if _digest(results)[1] != digest:
            sys.exit("a pass found other detections than the first")
        best = min(best, seconds)
    print(f"detect  {best:.2f} s cpu  {best / events * 1e6:6.2f} µs/event  {events / best:10,.0f} events/s")

    if args.top:
        total, spent = _profile(rules, batches)
        print(f"\nprofiled run {total:.2f} s cpu; rest (columns, routing, scans, prefilters): "
              f"{(total - sum(spent.values())) / events * 1e6:.2f} µs/event")
        print(f"{'µs/event':>9} {'share':>6}  rule")
        for name, seconds in spent.most_common(args.top):
            print(f"{seconds / events * 1e6:9.3f} {seconds / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
