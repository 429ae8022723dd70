"""Run compiled Sigma rules over event batches: logsource prefilter, then vectorised matching.

Each source declares which Sigma logsources its events answer (`Source.logsources`). For a batch
of a source the engine selects, per logsource mapping, the rows the mapping's conditions admit
(Sysmon EventID 1, Security 4688 …; `routing`) and runs only the rules that mapping serves, so a
rule never sees an event it could not match; of those, only the rules whose literal requirements
the batch's literal scans meet are evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np
import pyarrow as pa

from watchkeeper.detect.sigma.evaluate import BatchColumns, BatchMatcher, Cardinality
from watchkeeper.detect.sigma.literals import LiteralIndex
from watchkeeper.detect.sigma.nodes import CompiledRule, LogSource
from watchkeeper.detect.sigma.routing import Conditions, Routes
from watchkeeper.detect.sigma.selection import select_fields
from watchkeeper.detect.sigma.values import RegexMemo
from watchkeeper.events import RAW_COLUMN, col, fold_case
from watchkeeper.sources.base import FieldSelection, LogSourceMapping, Source


@dataclass(frozen=True)
class Hit:
    """A rule and the batch rows it matched."""

    rule: CompiledRule
    rows: np.ndarray


Clause = tuple[tuple[str, frozenset[str]], ...]


class _Prefilter:
    """Which of a step's rules may match a batch, from the literal scans of the fields they need.

    A rule's `needs` are (field, literals) of which one must occur for it to match. Rather than
    asking that of every rule (thousands per batch), the literals found in each needed field are
    looked up in an inverted index: the rules a batch can match come out in one pass per field.
    Those are then held to the rest of their requirements (`clauses`), which rules out about
    half of them before any evaluation.
    """

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.always = [i for i, r in enumerate(rules) if r.needs is None]
        self.fields: dict[str, dict[str, list[int]]] = {}  # field -> literal -> rules needing it
        for i, rule in enumerate(rules):
            for name, literals in rule.needs or ():
                by_literal = self.fields.setdefault(name, {})
                for literal in literals:
                    by_literal.setdefault(literal, []).append(i)
        self.clauses = [r.clauses if len(r.clauses) > 1 else () for r in rules]

    def candidates(self, matcher: BatchMatcher) -> list[int]:
        """Indices of the rules that may match, in rule order."""
        chosen = set(self.always)
        for name, by_literal in self.fields.items():
            column = matcher.prepared(name)
            if column is None:
                continue
            hits = matcher.columns.hits(column, name)
            if hits is None:
                for rules in by_literal.values():
                    chosen.update(rules)
                continue
            # A literal left out of the index (found too often) may occur: its rules stay in.
            for literals in (hits.present, hits.unindexed):
                if len(literals) < len(by_literal):
                    for literal in literals:
                        needing = by_literal.get(literal)
                        if needing is not None:
                            chosen.update(needing)
                else:
                    for literal, needing in by_literal.items():
                        if literal in literals:
                            chosen.update(needing)
        return [i for i in sorted(chosen) if _meets(self.clauses[i], matcher)]


def _meets(clauses: Sequence[Clause], matcher: BatchMatcher) -> bool:
    """Whether each requirement has one of its literals in its field (or cannot be told)."""
    for clause in clauses:
        for name, literals in clause:
            column = matcher.prepared(name)
            if column is None:
                continue
            hits = matcher.columns.hits(column, name)
            if hits is None or not literals.isdisjoint(hits.present) or not literals.isdisjoint(hits.unindexed):
                break
        else:
            return False
    return True


@dataclass(frozen=True)
class _Step:
    mapping: LogSourceMapping
    conditions: Conditions  # (): every row of the batch
    rules: tuple[CompiledRule, ...]
    prefilter: _Prefilter


@dataclass(frozen=True)
class _Plan:
    steps: list[_Step]
    literals: LiteralIndex
    cardinality: Cardinality = dataclass_field(default_factory=Cardinality)
    regexes: RegexMemo = dataclass_field(default_factory=RegexMemo)
    #: The columns the steps' conditions test.
    routed: tuple[str, ...] = ()


def serving_mappings(rule: CompiledRule, mappings: Sequence[LogSourceMapping]) -> list[LogSourceMapping]:
    """The mappings of a source that can feed `rule`; an unconditional one covers all the others."""
    key = (rule.logsource, id(mappings))
    found = _SERVING.get(key)
    if found is None:
        found = _SERVING[key] = _serving(rule.logsource, mappings)
    return found


# Rules share few distinct logsources; sources' mapping tables live as long as the process.
_SERVING: dict[tuple[LogSource, int], list[LogSourceMapping]] = {}


def _serving(ls: LogSource, mappings: Sequence[LogSourceMapping]) -> list[LogSourceMapping]:
    serving = [m for m in mappings if m.serves(ls.product, ls.category, ls.service)]
    broad = [m for m in serving if not m.conditions and not m.renames]
    return broad[:1] if broad else serving


class SigmaEngine:
    """Evaluates a rule set over batches of any registered source."""

    def __init__(self, rules: Iterable[CompiledRule], registry: Mapping[str, type[Source]]) -> None:
        self.rules = list(rules)
        self.registry = dict(registry)
        self._plans: dict[str, _Plan] = {}
        self._sources: dict[LogSource, list[str]] = {}
        self._selections: dict[str, FieldSelection | None] = {}

    def sources_for(self, rule: CompiledRule) -> list[str]:
        """Names of the registered sources whose events this rule can run on."""
        found = self._sources.get(rule.logsource)
        if found is None:
            found = self._sources[rule.logsource] = [
                name for name, src in sorted(self.registry.items()) if serving_mappings(rule, src.logsources)
            ]
        return found

    def plan(self, source_name: str) -> _Plan:
        """Which rules run on which row selection for batches of `source_name` (computed once)."""
        if source_name in self._plans:
            return self._plans[source_name]
        src = self.registry.get(source_name)
        # Sources sharing one mapping table (EVTX, Windows JSON, Winlogbeat) share one plan.
        shared = self._plans.get(f"\0{id(src.logsources)}") if src is not None else None
        if shared is not None:
            self._plans[source_name] = shared
            return shared
        steps: list[_Step] = []
        if src is not None:
            by_mapping: dict[int, list[CompiledRule]] = {}
            for rule in self.rules:
                for m in serving_mappings(rule, src.logsources):
                    by_mapping.setdefault(id(m), []).append(rule)
            for m in src.logsources:
                if id(m) in by_mapping:
                    rules = tuple(by_mapping[id(m)])
                    steps.append(_Step(m, _conditions(m), rules, _Prefilter(rules)))
        unique = {(r.id, r.path): r for s in steps for r in s.rules}.values()
        routed = tuple(sorted({name for s in steps for name, _ in s.conditions}))
        plan = self._plans[source_name] = _Plan(steps, LiteralIndex(unique), routed=routed)
        if src is not None:
            self._plans[f"\0{id(src.logsources)}"] = plan
        return plan

    def selection(self, source_name: str) -> FieldSelection | None:
        """The fields these rules read from events of `source_name` (None: no rule reads any)."""
        if source_name not in self._selections:
            steps = self.plan(source_name).steps
            self._selections[source_name] = select_fields(
                (s.conditions, s.mapping.renames, (r.condition for r in s.rules)) for s in steps
            ) if steps else None
        return self._selections[source_name]

    def detect(self, batch: pa.RecordBatch) -> list[Hit]:
        """All (rule, rows) matches in one batch of a single source."""
        if batch.num_rows == 0:
            return []
        batch = fold_case(batch)  # the same rows: hits index the batch as given
        source_name = batch.column(col("source"))[0].as_py()
        plan = self.plan(source_name)
        src = self.registry.get(source_name)
        expand = src.expand if src is not None and RAW_COLUMN in batch.schema.names else None
        columns = BatchColumns(batch, plan.literals, plan.cardinality, plan.regexes, expand)
        routes = Routes(BatchMatcher(columns), plan.routed) if plan.routed else None
        found: dict[str, tuple[CompiledRule, list[np.ndarray]]] = {}
        for step in plan.steps:
            rows = None
            if step.conditions and routes is not None:
                rows = routes.rows(step.conditions)
                if rows is None:
                    continue
                if len(rows) == batch.num_rows:
                    rows = None
            matcher = BatchMatcher(columns, step.mapping.renames, rows)
            for i in step.prefilter.candidates(matcher):
                rule = step.rules[i]
                res = matcher.evaluate(rule.condition)
                if res is not matcher.false and res.any():
                    hit_rows = np.flatnonzero(res)
                    if rows is not None:
                        hit_rows = rows[hit_rows]
                    found.setdefault(rule.id + "\0" + rule.path, (rule, []))[1].append(hit_rows)
        hits = []
        for rule, parts in found.values():
            rows_all = parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))
            hits.append(Hit(rule, rows_all))
        return hits


def _conditions(m: LogSourceMapping) -> Conditions:
    return tuple((column, frozenset(v.lower() for v in values)) for column, values in sorted(m.conditions.items()))
