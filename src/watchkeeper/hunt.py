"""`hunt`: run Sigma rules over files and archives and report what they find.

Sources stream batches; small batches of one source are coalesced so per-batch work (one pass
per rule) is amortised; detections stream to a sink, so memory stays bounded however large the
input and however many detections there are.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from watchkeeper.detect.levels import level_rank, tactics_of
from watchkeeper.detect.sigma.engine import Hit, SigmaEngine, serving_mappings
from watchkeeper.detect.sigma.evaluate import Expand
from watchkeeper.detect.sigma.loader import RuleProblem, RuleSet, load_rules
from watchkeeper.detect.sigma.nodes import CompiledRule, LogSource
from watchkeeper.events import RAW_COLUMN, col, native_columns
from watchkeeper.sources import Source, load_all
from watchkeeper.sources.deadletter import DeadLetter

COALESCE_ROWS = 8192
#: Merged batches also stay under this many bytes: memory follows bytes, not rows.
COALESCE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Detection:
    """One rule matching one event, with what an analyst needs to judge it."""

    rule_id: str
    rule_title: str
    level: str
    tags: tuple[str, ...]
    time: str | None
    host: str | None
    source: str
    source_file: str
    record: int | None
    event: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON and CSV writers."""
        return {
            "rule_id": self.rule_id, "rule_title": self.rule_title, "level": self.level,
            "tags": list(self.tags), "time": self.time, "host": self.host, "source": self.source,
            "source_file": self.source_file, "record": self.record, "event": self.event,
        }


@dataclass
class HuntOptions:
    """What to hunt over and with which rules."""

    paths: list[Path]
    rules: list[Path]
    min_level: str | None = None
    dead_letter: Path | None = None
    placeholders: dict[str, list[str]] = field(default_factory=dict)
    use_cache: bool = True


@dataclass
class HuntStats:
    """Counters for the summary: what was read, loaded and found."""

    events: int = 0
    members: int = 0
    dead_letters: int = 0
    repaired: int = 0  # records kept after a repair (bad UTF-8), also in the dead letter
    detections: int = 0
    seconds: float = 0.0
    rules_loaded: int = 0
    rules_skipped_level: int = 0
    rules_without_source: int = 0
    problems: list[RuleProblem] = field(default_factory=list)
    by_level: Counter[str] = field(default_factory=Counter)
    by_rule: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    by_host: Counter[str] = field(default_factory=Counter)
    by_tactic: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    matched_events: set[tuple[str, int | None]] = field(default_factory=set)


Sink = Callable[[Detection], None]


def select_rules(ruleset: RuleSet, min_level: str | None) -> list[CompiledRule]:
    """The rules at or above `min_level`."""
    if min_level is None:
        return ruleset.rules
    floor = level_rank(min_level)
    return [r for r in ruleset.rules if level_rank(r.level) >= floor]


def without_source(rules: list[CompiledRule], registry: Mapping[str, type[Source]]) -> int:
    """How many rules no registered source can feed (each distinct logsource asked once)."""
    served: dict[LogSource, bool] = {}
    count = 0
    for rule in rules:
        ok = served.get(rule.logsource)
        if ok is None:
            # Any one source will do: listing them all (`SigmaEngine.sources_for`) costs ~30 ms.
            ok = served[rule.logsource] = any(serving_mappings(rule, s.logsources) for s in registry.values())
        count += not ok
    return count


def prepare_rules(options: HuntOptions, stats: HuntStats) -> tuple[list[CompiledRule], dict[str, type[Source]]]:
    """Load the rules of `options` and the registry of sources; their counts and problems go to `stats`."""
    ruleset = load_rules(options.rules, options.placeholders, use_cache=options.use_cache)
    rules = select_rules(ruleset, options.min_level)
    registry = load_all()
    stats.rules_loaded = len(ruleset.rules)
    stats.rules_skipped_level = len(ruleset.rules) - len(rules)
    stats.rules_without_source = without_source(rules, registry)
    stats.problems = ruleset.problems
    return rules, registry


def run_hunt(
    options: HuntOptions,
    sink: Sink,
    on_member: Callable[[Any, str | None], None] | None = None,
    announce: Callable[[str], None] | None = None,
    batches: Iterable[pa.RecordBatch] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> HuntStats:
    """Hunt `options.paths` (or the given `batches`) with `options.rules`; detections go to `sink`.

    `on_ready` is called once the rules are loaded and before any input is read.
    """
    from watchkeeper.sources.autodetect import read_inputs

    started = time.perf_counter()
    stats = HuntStats()
    rules, registry = prepare_rules(options, stats)
    engine = SigmaEngine(rules, registry)
    if on_ready is not None:
        on_ready()

    dead = DeadLetter(options.dead_letter, announce, append=False)

    def counted_member(member: Any, source: str | None) -> None:
        stats.members += 1
        if on_member is not None:
            on_member(member, source)

    try:
        stream = batches if batches is not None else read_inputs(
            options.paths, dead, on_member=counted_member, select=engine.selection
        )
        for batch in coalesce(stream, COALESCE_ROWS):
            stats.events += batch.num_rows
            source = batch.column(col("source"))[0].as_py()
            stats.by_source[source] += batch.num_rows
            expand = registry[source].expand if RAW_COLUMN in batch.schema.names else None
            for det in detections_of(batch, engine.detect(batch), expand):
                count_detection(stats, det)
                sink(det)
    finally:
        dead.close()
    stats.dead_letters = dead.count
    stats.repaired = dead.repaired
    stats.seconds = time.perf_counter() - started
    return stats


def count_detection(stats: HuntStats, det: Detection) -> None:
    """Add one detection to the summary's counters."""
    stats.detections += 1
    stats.by_level[det.level] += 1
    stats.by_rule[(det.rule_id, det.rule_title, det.level)] += 1
    if det.host:
        stats.by_host[det.host] += 1
    for tactic in tactics_of(det.tags):
        stats.by_tactic[tactic] += 1
    stats.matched_events.add((det.source_file, det.record))


def coalesce(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Merge consecutive small batches of one source into batches of about `rows` rows.

    Detection costs a fixed amount of Python per rule and batch, so hundreds of tiny batches
    (one per small EVTX file) are merged; batches already large pass through unchanged.
    """
    pending: list[pa.RecordBatch] = []
    pending_rows = pending_bytes = 0
    pending_source: str | None = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        source = batch.column(col("source"))[0].as_py()
        size = batch.nbytes
        if pending and (
            source != pending_source or pending_rows + batch.num_rows > rows
            or pending_bytes + size > COALESCE_BYTES
        ):
            yield _merge(pending)
            pending, pending_rows, pending_bytes = [], 0, 0
        if batch.num_rows >= rows // 4 or size >= COALESCE_BYTES // 4:
            yield batch
            continue
        pending.append(batch)
        pending_rows += batch.num_rows
        pending_bytes += size
        pending_source = source
    if pending:
        yield _merge(pending)


def _merge(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """Concatenate batches whose columns differ: the union of columns, absent ones as nulls.

    Work is proportional to the columns each batch has, not to the union times the batches, which
    matters when hundreds of small EVTX files each bring their own event fields.
    """
    if len(batches) == 1:
        return batches[0]
    starts = np.cumsum([0] + [b.num_rows for b in batches])
    total = int(starts[-1])
    parts: dict[str, list[tuple[int, pa.Array]]] = {}
    for i, b in enumerate(batches):
        for name, arr in zip(b.schema.names, b.columns, strict=True):
            parts.setdefault(name, []).append((i, arr))
    names, columns = [], []
    for name, pieces in parts.items():
        kind = next((a.type for _, a in pieces if not pa.types.is_null(a.type)), pieces[0][1].type)
        chunks: list[pa.Array] = []
        at = 0  # next row of the merged batch to fill
        for i, a in pieces:
            if starts[i] > at:
                chunks.append(pa.nulls(int(starts[i]) - at, kind))
            chunks.append(a if a.type == kind else a.cast(kind))
            at = int(starts[i]) + len(a)
        if total > at:
            chunks.append(pa.nulls(total - at, kind))
        columns.append(pa.concat_arrays(chunks))
        names.append(name)
    return pa.RecordBatch.from_arrays(columns, names=names)


def detections_of(batch: pa.RecordBatch, hits: list[Hit], expand: Expand | None = None) -> Iterator[Detection]:
    """One Detection per (rule, matched row); each matched row is converted to Python once.

    A batch of selected fields gives its matched records' other fields through `expand`.
    """
    if not hits:
        return
    wanted = np.unique(np.concatenate([h.rows for h in hits]))
    rows = batch.take(pa.array(wanted.astype(np.int64)))
    position = {int(r): i for i, r in enumerate(wanted)}
    names = rows.schema.names

    def core(name: str) -> list[Any]:
        return rows.column(col(name)).to_pylist() if col(name) in names else [None] * rows.num_rows

    times, hosts, files, records, sources = (core(n) for n in ("time", "host", "file", "record", "source"))
    events = _events(rows if expand is None else expand(rows.column(RAW_COLUMN).to_pylist()))
    for hit in hits:
        rule = hit.rule
        for r in hit.rows:
            i = position[int(r)]
            event = events[i]
            t = times[i]
            yield Detection(
                rule_id=rule.id, rule_title=rule.title, level=rule.level, tags=rule.tags,
                time=t.isoformat().replace("+00:00", "Z") if isinstance(t, datetime) else t,
                host=hosts[i], source=sources[i], source_file=files[i], record=records[i], event=event,
            )


def _events(rows: pa.RecordBatch) -> list[dict[str, Any]]:
    """Each row's native fields that hold a value, in column order, as a dict.

    Filled column by column, touching only the cells that hold a value: in a batch of many small
    files of all kinds most of the hundreds of columns are empty in any one row.
    """
    events: list[dict[str, Any]] = [{} for _ in range(rows.num_rows)]
    for name in native_columns(rows):
        column = rows.column(name)
        if column.null_count == len(column):
            continue
        values = column.to_pylist()
        if column.null_count:
            valid = np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False)).tolist()
            for i in valid:
                events[i][name] = values[i]
        else:
            for event, value in zip(events, values, strict=True):
                event[name] = value
    return events
