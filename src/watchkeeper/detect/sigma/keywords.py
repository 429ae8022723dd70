"""Keyword (unbound) search: which rows hold one of some literals in any native field.

Sigma keywords match case-insensitively anywhere in an event. For ASCII literals that is a byte
search in ASCII-lower-cased text, so a batch's native string columns are copied once into one
buffer, lower-cased by Arrow, and each keyword list is one Aho–Corasick scan of that buffer
(leftmost-first, which the automaton runs with a vectorised prefilter several times faster than
an overlapping scan). Values are not separated in the buffer: a match that crosses from one value
into the next is no match, and the text it covered is scanned again so it hides nothing.

RE2's case-insensitive matching, which this replaces, also lets KELVIN SIGN match `k` and LATIN
SMALL LETTER LONG S match `s`; values holding either are checked with RE2 itself.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from functools import lru_cache
from itertools import chain

import ahocorasick_rs
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from watchkeeper.detect.sigma.literals import BoolArray

#: Non-ASCII characters RE2 folds to ASCII letters: (letter, UTF-8 bytes).
_FOLDS_TO_ASCII = (("k", "\u212a".encode()), ("s", "\u017f".encode()))
_FOLDED = ahocorasick_rs.BytesAhoCorasick([raw for _, raw in _FOLDS_TO_ASCII])


def scannable(values: Iterable[str]) -> bool:
    """Whether keyword literals can be searched as lower-cased bytes (ASCII, non-empty, no NUL)."""
    values = tuple(values)
    return bool(values) and all(v and v.isascii() and "\0" not in v for v in values)


@lru_cache(maxsize=1024)
def json_forms(values: tuple[str, ...]) -> tuple[str, ...]:
    """What a record's JSON text holds where a field holds one of `values` (`scannable` ones).

    JSON escapes `"`, `\\` and control characters the same way in every writer but for `/`, which
    some write `\\/`. Any character may also be written as a `\\u` sequence (PowerShell writes
    `'` as `\\u0027`): a text with such a sequence for a character of a value, in either case or
    as a character RE2 folds onto it, may hold the value too. Values not in the text as they stand
    (floats, objects in lists) are flagged by the reader (`events.RAW_INEXACT_COLUMN`).
    """
    forms: set[str] = set()
    for value in values:
        escaped = orjson.dumps(value).decode()[1:-1]
        forms.add(escaped)
        if "/" in escaped:
            forms.add(escaped.replace("/", "\\/"))
        for char in set(value):
            if char.isalpha():
                # Any escaped letter, by its first three hex digits: one pattern for 16 letters
                # keeps the automaton within its fast prefilter's 64 patterns.
                forms.update(f"\\u{ord(variant):04x}"[:5] for variant in (char.lower(), char.upper()))
            else:
                forms.add(f"\\u{ord(char):04x}")
    for letter, raw in _FOLDS_TO_ASCII:
        if any(letter in value.lower() for value in values):
            forms.add(f"\\u{ord(raw.decode()):04x}")
    return tuple(sorted(forms))


#: The automaton's vectorised prefilter (Teddy) takes at most 64 patterns; a longer list is
#: searched as several shorter ones, each scan about four times faster than one without it.
PREFILTER_PATTERNS = 64


@lru_cache(maxsize=256)
def _automata(values: tuple[str, ...]) -> tuple[ahocorasick_rs.BytesAhoCorasick, ...]:
    """Leftmost-first automata that together find lower-cased `values`."""
    patterns = sorted({v.lower().encode() for v in values})
    parts = -(-len(patterns) // PREFILTER_PATTERNS)
    size = -(-len(patterns) // parts)
    return tuple(
        ahocorasick_rs.BytesAhoCorasick(patterns[i : i + size], matchkind=ahocorasick_rs.MATCHKIND_LEFTMOST_FIRST)
        for i in range(0, len(patterns), size)
    )


_SCRATCH = threading.local()


def _scratch(size: int) -> np.ndarray:
    """A reused buffer of `size` bytes: a fresh one per batch costs a page fault every 4 KiB."""
    buffer: np.ndarray | None = getattr(_SCRATCH, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _SCRATCH.buffer = np.empty(size + size // 4, dtype=np.uint8)
    return buffer[:size]


class BatchText:
    """A batch's native string columns, ASCII-lower-cased into one buffer, values back to back."""

    def __init__(self, batch: pa.RecordBatch, names: Iterable[str]) -> None:
        self.batch = batch
        self.n = batch.num_rows
        wanted = set(names)
        pieces: list[np.ndarray] = []
        self._arrays: list[pa.Array] = []
        self._offsets: list[np.ndarray] = []  # per column, value offsets in its own data
        starts = [0]
        for name, array in zip(batch.schema.names, batch.columns, strict=True):
            if name not in wanted or array.null_count == len(array):
                continue
            if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
                # Records' text (`events.RAW_COLUMN`): only its bytes are searched, so a view will do.
                array = array.view(pa.large_string() if pa.types.is_large_binary(array.type) else pa.string())
            elif not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
                array = array.cast(pa.string())
            kind = np.int64 if pa.types.is_large_string(array.type) else np.int32
            buffers = array.buffers()
            offsets = np.frombuffer(buffers[1], dtype=kind)[array.offset : array.offset + len(array) + 1]
            lo, hi = int(offsets[0]), int(offsets[-1])
            if hi == lo or buffers[2] is None:
                continue
            pieces.append(np.frombuffer(buffers[2], dtype=np.uint8)[lo:hi])
            self._arrays.append(array)
            self._offsets.append(offsets)
            starts.append(starts[-1] + hi - lo)
        self._starts = np.array(starts, dtype=np.int64)  # where each column begins in the buffer
        self._rebased: dict[int, np.ndarray] = {}
        size = int(self._starts[-1])
        self._data: memoryview | None = None
        self._folded: dict[int, np.ndarray] = {}  # column -> rows holding a character RE2 folds to ASCII
        if size:
            # One column (records' text) is lower-cased from where it lies, not copied first.
            joined = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, out=_scratch(size))
            whole = pa.Array.from_buffers(
                pa.large_string(), 1,
                [None, pa.py_buffer(np.array([0, size], dtype=np.int64)), pa.py_buffer(joined)],
            )
            self._lowered = pc.ascii_lower(whole)
            self._data = memoryview(self._lowered.buffers()[2]).cast("B")[:size]
            self._find_folded(self._data)

    def _find_folded(self, data: memoryview) -> None:
        # Searched for apart from the keywords: non-ASCII patterns keep the keyword automaton from
        # its fast prefilter, and these characters are rare enough to be checked one by one.
        found = _FOLDED.find_matches_as_indexes(data)  # ASCII lower-casing left them as they were
        if not found:
            return
        positions = np.array([start for _, start, _ in found], dtype=np.int64)
        columns = np.searchsorted(self._starts, positions, side="right") - 1
        for column in np.unique(columns).tolist():
            bounds = self._value_bounds(column)
            self._folded[column] = np.unique(np.searchsorted(bounds, positions[columns == column], side="right") - 1)

    def _value_bounds(self, column: int) -> np.ndarray:
        """Where each value of a column starts in the buffer, plus its end (computed on first use)."""
        found = self._rebased.get(column)
        if found is None:
            offsets = self._offsets[column].astype(np.int64)
            found = self._rebased[column] = offsets - offsets[0] + self._starts[column]
        return found

    def rows_with(self, values: tuple[str, ...]) -> BoolArray:
        """Rows in which some native field contains one of `values` (see `scannable`)."""
        out = np.zeros(self.n, dtype=bool)
        if self._data is None:
            return out
        regions = [(automaton, 0, len(self._data)) for automaton in _automata(values)]
        while regions:
            automaton, lo, hi = regions.pop()
            found = automaton.find_matches_as_indexes(self._data[lo:hi])
            if not found:
                continue
            flat = np.fromiter(chain.from_iterable(found), dtype=np.int64, count=3 * len(found)).reshape(-1, 3)
            starts, ends = flat[:, 1] + lo, flat[:, 2] + lo
            columns = np.searchsorted(self._starts, starts, side="right") - 1
            for column in np.unique(columns).tolist():
                mine = columns == column
                bounds = self._value_bounds(column)
                rows = np.searchsorted(bounds, starts[mine], side="right") - 1
                spans = ends[mine] > bounds[rows + 1]
                for start, end in zip(starts[mine][spans].tolist(), ends[mine][spans].tolist(), strict=True):
                    # It crosses into the next value: rescan what it covered, one byte further on.
                    regions.append((automaton, start + 1, self._value_end(end - 1)))
                hit = rows[~spans]
                out[hit[self._valid(column)[hit]]] = True
        letters = set("".join(values).lower())
        if self._folded and letters & {letter for letter, _ in _FOLDS_TO_ASCII}:
            for column, rows in self._folded.items():
                self._check_folds(column, rows[~out[rows]], values, out)
        return out

    def _value_end(self, position: int) -> int:
        """Where the value holding the byte at `position` ends in the buffer."""
        column = int(np.searchsorted(self._starts, position, side="right")) - 1
        bounds = self._value_bounds(column)
        return int(bounds[int(np.searchsorted(bounds, position, side="right"))])

    def _valid(self, column: int) -> BoolArray:
        # A null slot may still point at bytes: they are no value.
        array = self._arrays[column]
        if array.null_count == 0:
            return np.ones(self.n, dtype=bool)
        return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)

    def _check_folds(self, column: int, rows: np.ndarray, values: tuple[str, ...], out: BoolArray) -> None:
        """Decide rows whose values hold a character RE2 folds to ASCII with RE2 itself."""
        if not len(rows):
            return
        taken = self._arrays[column].take(pa.array(rows, type=pa.int64()))
        pattern = "|".join(re.escape(v) for v in values)
        res = pc.match_substring_regex(taken, pattern=pattern, ignore_case=True)
        out[rows[np.asarray(pc.fill_null(res, False).to_numpy(zero_copy_only=False), dtype=bool)]] = True
