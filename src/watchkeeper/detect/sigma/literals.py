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
_NEWLINE = 10


class LiteralHits:
    """Where each literal occurs in one column's lower-cased distinct values (from one scan).

    Kept as the automaton reported them: which literals occur is all the rules' prefilter asks,
    and most scans are never asked more, so occurrences are sorted out per literal on first use.
    """

    __slots__ = ("_at_end", "_at_start", "_ids", "_names", "_offsets", "_pattern_ids", "_patterns", "_present",
                 "_raw", "_slices", "_unique", "indexed", "n_unique", "unindexed")

    def __init__(self, ids: Mapping[str, int], patterns: list[str], n_unique: int, indexed: frozenset[str],
                 unindexed: frozenset[str], raw: list[tuple[int, int, int]] | np.ndarray | None = None,
                 automaton: _Automaton | None = None, offsets: np.ndarray | None = None) -> None:
        self._ids = ids
        self._patterns = patterns
        self.n_unique = n_unique
        self.indexed = indexed  # the literals this scan looked for
        self.unindexed = unindexed  # the others: found too often to be worth indexing
        # (automaton pattern, start, end) in the values' bytes: the automaton's list, or an array
        # of those rows when the scan went by distinct lines (`_by_lines`).
        self._raw: list[tuple[int, int, int]] | np.ndarray = [] if raw is None else raw
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
            raw = self._raw
            ids = np.unique(raw[:, 0]).tolist() if isinstance(raw, np.ndarray) else {p for p, _, _ in raw}
            self._present = frozenset(names[p] for p in ids)
        return self._present

    def _sort(self) -> dict[int, tuple[int, int]]:
        """Occurrences grouped by literal: pattern id -> its run in `_unique`, `_at_start`, `_at_end`."""
        if self._slices is not None:
            return self._slices
        self._slices = {}
        if not len(self._raw) or self._offsets is None:
            return self._slices
        hits = _as_rows(self._raw)
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
        if not len(self._raw):
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


def _as_rows(found: list[tuple[int, int, int]] | np.ndarray) -> np.ndarray:
    """Occurrences as an (n, 3) int64 array of (pattern, start, end)."""
    if isinstance(found, np.ndarray):
        return found
    # Flattened first: numpy converts a list of tuples about twenty times slower.
    return np.fromiter(chain.from_iterable(found), dtype=np.int64, count=3 * len(found)).reshape(-1, 3)


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


#: Values this long on average (bytes) are scanned by distinct lines: PowerShell's module context
#: repeats a session's whole command line in every event, and a script block its common lines.
LINE_SCAN_MIN_BYTES = 256
#: Lines are worth it when their distinct ones hold at most this share of the bytes.
LINE_SCAN_MAX_SHARE = 0.5
#: After lines did not pay for a field, this many scans go whole before lines are tried again.
LINE_SCAN_RETRY = 32
_NEVER = -(1 << 62)

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
        self._line_scans: dict[str, int] = {}  # per field: 0 scan by lines; < 0 scans left before trying again

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
        data = memoryview(buffers[2]).cast("B")[base:end]
        found: list[tuple[int, int, int]] | np.ndarray | None = None
        if self._lines_may_pay(field, n, end - base):
            found = _by_lines(ac, data, offsets.astype(np.int64) - base)
            self._line_scans[field] = 0 if found is not None else -LINE_SCAN_RETRY
        if found is None:
            found = ac.find_matches_as_indexes(data, overlapping=True)
        if len(found) > max(n, HOT_OCCURRENCES):
            counts = np.bincount(active_ids[_as_rows(found)[:, 0]])
            common = np.flatnonzero(counts > max(n, HOT_OCCURRENCES))
            if len(common):
                self._hot.setdefault(field, set()).update(patterns[i] for i in common.tolist())
                # Rebuilt without them for the next batch.
                self._automata.pop((field, False), None)
                self._automata.pop((field, True), None)
        return LiteralHits(ids, patterns, n, indexed, unindexed, found, automaton,
                           offsets.astype(np.int64) - base if len(found) else None)

    def _lines_may_pay(self, field: str, n: int, size: int) -> bool:
        """Whether to scan this field's values by distinct lines (`_by_lines`) this time."""
        if size < LINE_SCAN_MIN_BYTES * n:
            return False
        waited = self._line_scans.get(field)
        if waited is None:  # a literal holding a line break can span lines: its field goes whole
            waited = self._line_scans[field] = 0 if all("\n" not in p for p in self._patterns[field]) else _NEVER
        if waited < 0:  # lines did not repeat enough lately: scanned whole for a while
            self._line_scans[field] = waited + 1
            return False
        return True


def _by_lines(ac: ahocorasick_rs.BytesAhoCorasick, data: memoryview, offsets: np.ndarray) -> np.ndarray | None:
    """Every occurrence in the values `data` holds (`offsets` bound each), found in their distinct lines.

    A literal without a line break lies within one line, so scanning each distinct line once and
    placing its occurrences at every place that line stands finds what a scan of everything finds
    (matches across two values excepted, which are none). None when the distinct lines hold more
    than `LINE_SCAN_MAX_SHARE` of the bytes: then the whole is scanned.
    """
    size = len(data)
    breaks = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == _NEWLINE) + 1
    # Every value starts a line; each line keeps its break (no literal holds one).
    starts = np.union1d(offsets[:-1], breaks[breaks < size])
    bounds = np.append(starts, size).astype(np.int64)
    lines = pa.Array.from_buffers(pa.large_binary(), len(starts), [None, pa.py_buffer(bounds), pa.py_buffer(data)])
    encoded = lines.dictionary_encode()
    distinct = encoded.dictionary
    ends = np.frombuffer(distinct.buffers()[1], dtype=np.int64)[distinct.offset : distinct.offset + len(distinct) + 1]
    low, high = int(ends[0]), int(ends[-1])
    if high - low > LINE_SCAN_MAX_SHARE * size:
        return None
    found = ac.find_matches_as_indexes(memoryview(distinct.buffers()[2]).cast("B")[low:high], overlapping=True)
    if not found:
        return np.zeros((0, 3), dtype=np.int64)
    hits = _as_rows(found)
    rel = ends - low
    line = np.searchsorted(rel, hits[:, 1], side="right") - 1
    inside = hits[:, 2] <= rel[line + 1]  # across two distinct lines: no occurrence in the values
    hits, line = hits[inside], line[inside]
    # Each occurrence, once per place its line stands: places grouped by line, then gathered.
    indices = encoded.indices.to_numpy().astype(np.int64)
    places = np.argsort(indices, kind="stable")
    counts = np.bincount(indices, minlength=len(distinct))
    firsts = np.cumsum(counts) - counts
    times = counts[line]
    which = np.repeat(np.arange(len(line)), times)
    nth = np.arange(len(which)) - np.repeat(np.cumsum(times) - times, times)
    at = starts[places[firsts[line][which] + nth]] - rel[line][which]
    return np.stack((hits[which, 0], hits[which, 1] + at, hits[which, 2] + at), axis=1)
