"""Find every literal the rules look for in a column's distinct values, in one automaton scan.

A scan records each occurrence (which literal, which distinct value, at its start or end), from
which `eq`, `contains`, `startswith` and `endswith` leaves and the rules' literal prefilters are
decided without a string kernel per leaf.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from itertools import chain
from typing import TypeAlias

import ahocorasick_rs
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from watchkeeper.detect.sigma.nodes import CompiledRule, Match, Op

BoolArray: TypeAlias = npt.NDArray[np.bool_]

#: Leaves whose values are literals that must occur in the field for the leaf to hold.
LITERAL_OPS = frozenset({Op.EQ, Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH})


class LiteralHits:
    """Where each literal occurs in one column's lower-cased distinct values (from one scan).

    Kept as the automaton reported them: which literals occur is all the rules' prefilter asks,
    and most scans are never asked more, so occurrences are sorted out per literal on first use.
    """

    __slots__ = ("_at_end", "_at_start", "_ids", "_names", "_offsets", "_pattern_ids", "_patterns", "_present",
                 "_raw", "_slices", "_unique", "indexed", "n_unique", "unindexed")

    def __init__(self, ids: Mapping[str, int], patterns: list[str], n_unique: int, indexed: frozenset[str],
                 unindexed: frozenset[str], raw: list[tuple[int, int, int]] | None = None,
                 automaton: _Automaton | None = None, offsets: np.ndarray | None = None) -> None:
        self._ids = ids
        self._patterns = patterns
        self.n_unique = n_unique
        self.indexed = indexed  # the literals this scan looked for
        self.unindexed = unindexed  # the others: found too often to be worth indexing
        self._raw = raw or []  # (automaton pattern, start, end) in the values' bytes
        # Automaton pattern -> index in `patterns`, and -> literal.
        self._pattern_ids = automaton[1] if automaton is not None else _NO_IDS
        self._names = automaton[2] if automaton is not None else []
        self._offsets = offsets  # value offsets, rebased to the scanned bytes
        self._present: frozenset[str] | None = None
        self._slices: dict[int, tuple[int, int]] | None = None

    @property
    def present(self) -> frozenset[str]:
        """The literals found (one spanning two values included: the prefilter may over-select)."""
        if self._present is None:
            names = self._names
            self._present = frozenset(names[p] for p in {p for p, _, _ in self._raw})
        return self._present

    def _sort(self) -> dict[int, tuple[int, int]]:
        """Occurrences grouped by literal: pattern id -> its run in `_unique`, `_at_start`, `_at_end`."""
        if self._slices is not None:
            return self._slices
        self._slices = {}
        if not self._raw or self._offsets is None:
            return self._slices
        raw = self._raw
        # Flattened first: numpy converts a list of tuples about twenty times slower.
        hits = np.fromiter(chain.from_iterable(raw), dtype=np.int64, count=3 * len(raw)).reshape(-1, 3)
        pids = self._pattern_ids[hits[:, 0]]
        rel = self._offsets
        unique = np.searchsorted(rel, hits[:, 1], side="right") - 1
        ends = rel[unique + 1]
        keep = hits[:, 2] <= ends  # a match across two values is not a match
        if not keep.all():
            hits, unique, pids, ends = hits[keep], unique[keep], pids[keep], ends[keep]
        order = np.argsort(pids, kind="stable")
        hits, unique, pids, ends = hits[order], unique[order], pids[order], ends[order]
        self._unique = unique
        self._at_start = hits[:, 1] == rel[unique]
        self._at_end = hits[:, 2] == ends
        if len(pids):
            firsts = np.concatenate(([0], np.flatnonzero(pids[1:] != pids[:-1]) + 1))
            lasts = np.append(firsts[1:], len(pids))
            self._slices = dict(zip(pids[firsts].tolist(), zip(firsts.tolist(), lasts.tolist(), strict=True),
                                    strict=True))
        return self._slices

    def evaluate(self, m: Match) -> BoolArray | None:
        """A literal leaf over the distinct values plus a False null slot, from the occurrences alone.

        None when no distinct value satisfies it.
        """
        if not self._raw:
            return None
        # Value lists run to hundreds of literals; the few found here are all that count.
        found = self.present.intersection(value_set(m))
        if not found:
            return None
        slices = self._sort()
        ids = self._ids
        out: BoolArray | None = None
        for v in found:
            run = slices.get(ids[v])
            if run is None:
                continue
            if out is None:
                out = np.zeros(self.n_unique + 1, dtype=bool)
            lo, hi = run
            unique = self._unique[lo:hi]
            if m.op is Op.CONTAINS:
                out[unique] = True
            elif m.op is Op.STARTSWITH:
                out[unique[self._at_start[lo:hi]]] = True
            elif m.op is Op.ENDSWITH:
                out[unique[self._at_end[lo:hi]]] = True
            else:
                out[unique[self._at_start[lo:hi] & self._at_end[lo:hi]]] = True
        return out if out is not None and out.any() else None


@lru_cache(maxsize=65536)
def value_set(m: Match) -> frozenset[str]:
    """A leaf's values as a set (cached: leaves are shared by rules and batches)."""
    return frozenset(m.values)


#: A literal found more often than this (and than there are distinct values) leaves the index.
HOT_OCCURRENCES = 2048
#: A field's automaton becomes a DFA once this many bytes per literal have been scanned with the
#: default one: a DFA scans about three times faster but costs ~20 µs and ~7 KiB per literal to
#: build, which that much text repays.
DFA_BYTES_PER_LITERAL = 4096
#: Nor beyond this many literals (a DFA of CommandLine's 9,000 would take 60 MB).
DFA_MAX_LITERALS = 4096


#: An automaton, the literal id and the literal of each of its patterns, the literals it indexes and
#: those it leaves out.
_Automaton: TypeAlias = tuple[ahocorasick_rs.BytesAhoCorasick, np.ndarray, list[str], frozenset[str], frozenset[str]]
_NO_IDS = np.zeros(0, dtype=np.int64)


class LiteralIndex:
    """Every literal the rules look for, per field, in one Aho–Corasick automaton per field.

    One scan of a column's distinct values finds every occurrence of every literal of every rule
    on that field; from the occurrences alone `contains`, `startswith`, `endswith` and equality
    leaves are decided without running one string kernel per leaf. Built once per rule set and
    logsource, used for every batch. A literal found more often than there are distinct values
    (`.exe` in image paths) is dropped from its automaton: listing its occurrences costs more than
    testing it with a string kernel, which its leaves then do.
    """

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        literals: dict[str, set[str]] = {}
        for rule in rules:
            for field, values in rule.literals:
                literals.setdefault(field, set()).update(values)
        self._patterns = {f: sorted(v) for f, v in literals.items()}
        self._ids = {f: {p: i for i, p in enumerate(v)} for f, v in self._patterns.items()}
        self._hot: dict[str, set[str]] = {}
        self._automata: dict[tuple[str, bool], _Automaton] = {}
        self._scanned: dict[str, int] = {}  # bytes scanned so far, per field
        self._covers: dict[tuple[Match, str], bool] = {}  # whether a leaf's values are all literals here

    def covers(self, m: Match, key: str) -> bool:
        """Whether every value of a leaf is indexed under `key` (so `scan` results decide it)."""
        found = self._covers.get((m, key))
        if found is None:
            ids = self._ids.get(key)
            found = self._covers[(m, key)] = (
                m.op in LITERAL_OPS and not m.cased and ids is not None and all(v in ids for v in m.values)
            )
        if not found:
            return False
        hot = self._hot.get(key)
        return not hot or hot.isdisjoint(value_set(m))

    def _automaton(self, field: str, dfa: bool) -> _Automaton:
        found = self._automata.get((field, dfa))
        if found is None:
            hot = frozenset(self._hot.get(field, ()))
            ids = self._ids[field]
            active = [p for p in self._patterns[field] if p not in hot]
            kind = ahocorasick_rs.Implementation.DFA if dfa else None
            automaton = ahocorasick_rs.BytesAhoCorasick([p.encode() for p in active], implementation=kind)
            found = self._automata[(field, dfa)] = (
                automaton, np.array([ids[p] for p in active], dtype=np.int64), active, frozenset(active), hot
            )
        return found

    def scan(self, field: str, lowered: pa.Array) -> LiteralHits | None:
        """Occurrences of the field's literals in lower-cased distinct values (None: no literals)."""
        patterns = self._patterns.get(field)
        if not patterns:
            return None
        n = len(lowered)
        scanned = self._scanned[field] = self._scanned.get(field, 0) + lowered.nbytes
        dfa = scanned >= DFA_BYTES_PER_LITERAL * len(patterns) and len(patterns) <= DFA_MAX_LITERALS
        automaton = self._automaton(field, dfa)
        ac, active_ids, _, indexed, unindexed = automaton
        ids = self._ids[field]
        buffers = lowered.buffers()
        if n == 0 or not indexed or buffers[2] is None:
            return LiteralHits(ids, patterns, n, indexed, unindexed)
        kind = np.int64 if pa.types.is_large_string(lowered.type) else np.int32
        offsets = np.frombuffer(buffers[1], dtype=kind)[lowered.offset : lowered.offset + n + 1]
        base, end = int(offsets[0]), int(offsets[-1])
        found = ac.find_matches_as_indexes(memoryview(buffers[2]).cast("B")[base:end], overlapping=True)
        if len(found) > max(n, HOT_OCCURRENCES):
            counts = np.bincount(active_ids[[p for p, _, _ in found]])
            common = np.flatnonzero(counts > max(n, HOT_OCCURRENCES))
            if len(common):
                self._hot.setdefault(field, set()).update(patterns[i] for i in common.tolist())
                # Rebuilt without them for the next batch.
                self._automata.pop((field, False), None)
                self._automata.pop((field, True), None)
        return LiteralHits(ids, patterns, n, indexed, unindexed, found, automaton,
                           offsets.astype(np.int64) - base if found else None)
