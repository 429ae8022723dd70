"""Evaluate compiled Sigma conditions over Arrow batches, vectorised.

Work per batch is shared across rules: each column is dictionary-encoded and lower-cased once,
each distinct leaf (field, operator, values) is computed once on the column's *distinct* values
and spread to rows with one numpy gather, and AND/OR/NOT are numpy boolean operations. Literal
leaves are read off one Aho–Corasick scan per column (`literals`), the tests of a few distinct
values run in Python and of many in Arrow's kernels (`values`), and keywords search the batch's
whole text at once (`keywords`). A leaf false on every distinct value is the shared all-False
mask, which AND, OR and NOT recognise by identity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from watchkeeper.detect.sigma.keywords import BatchText, json_forms, scannable
from watchkeeper.detect.sigma.literals import BoolArray, LiteralHits, LiteralIndex
from watchkeeper.detect.sigma.nodes import And, Const, Match, Node, Not, Op, Or
from watchkeeper.detect.sigma.values import (
    SMALL_DICTIONARY,
    RegexMemo,
    keyword_pattern,
    lower,
    match_few,
    match_values,
)
from watchkeeper.events import RAW_COLUMN, RAW_INEXACT_COLUMN, RESERVED_COLUMNS, is_native

#: Gives every native field of records from their text (`Source.expand`).
Expand = Callable[[Sequence[bytes | str]], pa.RecordBatch]


class _Column:
    """One column prepared for matching: distinct values (as read and lower-cased) and row codes.

    Null rows point at one extra slot (`len(uniques)`) that every leaf sets to False.
    """

    __slots__ = ("_strings", "codes", "hits", "lowered", "n_unique", "on_uniques", "uniques")

    def __init__(self, array: pa.Array, distinct: bool = False) -> None:
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if distinct:
            # Values known to be (nearly) all distinct: each is its own entry, without hashing.
            valid = self._valid(array)
            self.uniques: pa.Array = array.drop_null() if array.null_count else array
            self.n_unique = n_unique = len(self.uniques)
            if valid is None:
                self.codes: np.ndarray = np.arange(n_unique, dtype=np.intp)
            else:
                self.codes = np.where(valid, np.cumsum(valid) - 1, n_unique).astype(np.intp)
        else:
            encoded = pc.dictionary_encode(array, null_encoding="mask")
            self.uniques = encoded.dictionary
            self.n_unique = n_unique = len(self.uniques)
            indices = encoded.indices
            codes = np.frombuffer(indices.buffers()[1], dtype=np.int32)[indices.offset : indices.offset + len(indices)]
            valid = self._valid(indices)
            self.codes = codes.astype(np.intp) if valid is None else np.where(valid, codes, n_unique).astype(np.intp)
        self.lowered: pa.Array | None = None
        self.hits: dict[str, LiteralHits | None] = {}  # literal scans, by index key
        self.on_uniques: dict[Match, BoolArray | None] = {}  # leaf results over the distinct values
        self._strings: dict[bool, list[str]] = {}

    @staticmethod
    def _valid(array: pa.Array) -> BoolArray | None:
        if not array.null_count:
            return None
        return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)

    def lower(self) -> pa.Array:
        """The distinct values lower-cased (computed on first use)."""
        if self.lowered is None:
            self.lowered = lower(self.uniques)
        return self.lowered

    def strings(self, cased: bool) -> list[str]:
        """The distinct values as Python strings, as read or lower-cased (computed on first use)."""
        found = self._strings.get(cased)
        if found is None:
            found = self._strings[cased] = (self.uniques if cased else self.lower()).to_pylist()
        return found


def _text_bytes(array: pa.Array) -> int:
    """Bytes of string data in an array (its offsets and validity left out)."""
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)) or not len(array):
        return 0
    kind = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=kind)
    return int(offsets[array.offset + len(array)]) - int(offsets[array.offset])


class Cardinality:
    """Which columns were nearly all distinct in recent batches: hashing them finds no duplicates.

    Rendered script blocks and module context (`ContextInfo`) differ in every event; their
    dictionary encoding costs a hash of every byte for nothing. A column seen nearly all distinct
    is taken as it is for the next batches, then measured again.
    """

    RATIO = 0.9
    MIN_VALUES = 32  # fewer values say little
    MIN_BYTES = 256  # per value: short values hash fast, and their duplicates are worth finding
    BATCHES = 16  # how long an observation holds

    def __init__(self) -> None:
        self._left: dict[str, int] = {}  # column -> batches still taken as distinct

    def distinct(self, name: str) -> bool:
        """Whether to take column `name` of this batch as all distinct (counts the batch)."""
        left = self._left.get(name, 0)
        if left:
            self._left[name] = left - 1
        return left > 0

    def observe(self, name: str, n_unique: int, n_values: int, n_bytes: int) -> None:
        """Record how many distinct values a dictionary encoding of `n_values` values found."""
        if n_values >= self.MIN_VALUES and n_unique >= self.RATIO * n_values and n_bytes >= self.MIN_BYTES * n_values:
            self._left[name] = self.BATCHES


class BatchColumns:
    """The columns of one batch, prepared once and shared by every logsource step over it."""

    def __init__(self, batch: pa.RecordBatch, literals: LiteralIndex | None = None,
                 cardinality: Cardinality | None = None, regexes: RegexMemo | None = None,
                 expand: Expand | None = None) -> None:
        self.batch = batch
        self.literals = literals
        self.cardinality = cardinality
        self.regexes = regexes
        #: Set when the batch holds the selected fields only: keywords then need `expand`.
        self.expand = expand
        self.names = {n.lower(): n for n in batch.schema.names if is_native(n)}
        # Renames and logsource conditions may name reserved columns (`_outcome`, `_source`).
        self.reserved = {n: n for n in batch.schema.names if n in RESERVED_COLUMNS}
        self._columns: dict[str, _Column] = {}
        self._valid: dict[str, BoolArray] = {}
        self._keyword_results: dict[tuple[str, Match], BoolArray] = {}
        self._text: BatchText | None = None
        self._text_results: dict[tuple[str, ...], BoolArray] = {}
        # Per row selection (a logsource step's rows, kept alive by its matcher): its text.
        self._raw_texts: dict[int, tuple[np.ndarray | None, BatchText, pa.Array]] = {}
        self._expanded: BatchColumns | None = None  # every field of every row, when a keyword needs it

    def expanded_keyword(self, m: Match, rows: np.ndarray | None) -> BoolArray:
        """Which of `rows` (None: all) satisfy keyword leaf `m` over all their fields, in a batch of
        selected fields.

        A record's text holds every value it has, JSON-escaped: a record whose text holds a
        keyword in none of its escaped forms (`keywords.json_forms`) has no field that contains
        it, unless a value is not in the text as it stands (`events.RAW_INEXACT_COLUMN`). The few
        records the text admits are read in full and decided exactly; other keyword forms (regular
        expressions, a newline, which joins list items) read every record in full, once a batch.
        """
        assert self.expand is not None
        literal = m.op in (Op.EQ, Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH)
        if not literal or not scannable(m.values) or any("\n" in v for v in m.values):
            if self._expanded is None:
                self._expanded = BatchColumns(self.expand(self.batch.column(RAW_COLUMN).to_pylist()))
            return BatchMatcher(self._expanded, rows=rows).evaluate(m)
        text, raw = self._raw_text(rows)
        admitted = text.rows_with(json_forms(tuple(v.lower() for v in m.values)))
        if RAW_INEXACT_COLUMN in self.batch.schema.names:
            inexact = self.batch.column(RAW_INEXACT_COLUMN).fill_null(False).to_numpy(zero_copy_only=False)
            admitted |= np.asarray(inexact if rows is None else inexact[rows], dtype=bool)
        candidates = np.flatnonzero(admitted)
        found = np.zeros(len(raw), dtype=bool)
        if len(candidates):
            full = self.expand(raw.take(pa.array(candidates)).to_pylist())
            found[candidates[BatchMatcher(full).evaluate(m)]] = True
        return found

    def _raw_text(self, rows: np.ndarray | None) -> tuple[BatchText, pa.Array]:
        """The records' text of `rows` (None: all) for keyword scans, made once per row selection."""
        cached = self._raw_texts.get(id(rows))
        if cached is None or cached[0] is not rows:
            raw = self.batch.column(RAW_COLUMN)
            if rows is not None:
                raw = raw.take(pa.array(rows))
            text = BatchText(pa.RecordBatch.from_arrays([raw], [RAW_COLUMN]), [RAW_COLUMN])
            cached = self._raw_texts[id(rows)] = (rows, text, raw)
        return cached[1], cached[2]

    def text_rows(self, values: tuple[str, ...]) -> BoolArray:
        """Rows of the whole batch with one of `values` in a native field (`keywords.scannable`)."""
        found = self._text_results.get(values)
        if found is None:
            if self._text is None:
                self._text = BatchText(self.batch, self.names.values())
            found = self._text_results[values] = self._text.rows_with(values)
        return found

    def valid(self, name: str) -> BoolArray:
        """Which rows hold a value in column `name` (cheaper than preparing the column)."""
        found = self._valid.get(name)
        if found is None:
            array = self.batch.column(name)
            found = self._valid[name] = (
                np.ones(len(array), dtype=bool) if array.null_count == 0
                else np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            )
        return found

    def keyword(self, name: str, kw: Match) -> BoolArray:
        """Rows of the whole batch whose column `name` satisfies keyword leaf `kw`, memoised.

        Keywords search the raw values of all rows at once, case-insensitively in RE2: no
        lower-cased copy and no dictionary of every distinct long text (rendered `Message`s).
        """
        key = (name, kw)
        found = self._keyword_results.get(key)
        if found is not None:
            return found
        array = self.batch.column(name)
        if kw.op in (Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH) and not kw.cased:
            res = pc.match_substring_regex(array, pattern=keyword_pattern(kw), ignore_case=True)
            found = np.asarray(pc.fill_null(res, False).to_numpy(zero_copy_only=False), dtype=bool)
        else:
            filled = array.fill_null("") if array.null_count else array
            found = match_values(filled if kw.cased else pc.utf8_lower(filled), kw)
        self._keyword_results[key] = found
        return found

    def get(self, name: str) -> _Column:
        """The prepared column called exactly `name` (which must exist)."""
        found = self._columns.get(name)
        if found is None:
            array = self.batch.column(name)
            memo = self.cardinality
            if memo is None:
                found = _Column(array)
            elif memo.distinct(name):
                found = _Column(array, distinct=True)
            else:
                found = _Column(array)
                memo.observe(name, found.n_unique, len(array) - array.null_count, _text_bytes(array))
            self._columns[name] = found
        return found

    def hits(self, column: _Column, index_key: str) -> LiteralHits | None:
        """The literal scan of a column for the literals indexed under `index_key`, memoised."""
        if index_key not in column.hits:
            column.hits[index_key] = (
                self.literals.scan(index_key, column.lower()) if self.literals is not None else None
            )
        return column.hits[index_key]

    def leaf(self, column: _Column, m: Match, index_key: str) -> BoolArray | None:
        """A value-level leaf over a column's distinct values (plus a False null slot), memoised.

        None when no distinct value satisfies it, which spares the rows a gather.
        """
        if m in column.on_uniques:
            return column.on_uniques[m]
        if self.literals is not None and self.literals.covers(m, index_key):
            hits = self.hits(column, index_key)
            if hits is not None:
                column.on_uniques[m] = found = hits.evaluate(m)
                return found
        # Otherwise a few distinct values are tested in Python, many by an Arrow kernel.
        result = match_few(column.strings(m.cased), m, self.regexes) if column.n_unique <= SMALL_DICTIONARY else None
        if result is None:
            result = match_values(column.uniques if m.cased else column.lower(), m)
        found = column.on_uniques[m] = np.append(result, False) if result.any() else None
        return found


class BatchMatcher:
    """Evaluates conditions over some rows of a batch, remembering the leaves it has computed."""

    def __init__(
        self,
        columns: BatchColumns | pa.RecordBatch,
        renames: Mapping[str, str] | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        self.columns = columns if isinstance(columns, BatchColumns) else BatchColumns(columns)
        self._rows = rows
        self.n = self.columns.batch.num_rows if rows is None else len(rows)
        self._renames = {k.lower(): v for k, v in (renames or {}).items()}
        self._prepared: dict[str, _Column | None] = {}
        self._codes: dict[str, tuple[_Column, np.ndarray] | None] = {}
        self._leaves: dict[Match, BoolArray] = {}
        self._text: pa.Array | None = None
        # Shared all-False / all-True results, which callers may recognise by identity.
        self.false = np.zeros(self.n, dtype=bool)
        self.true = np.ones(self.n, dtype=bool)

    def prepared(self, field: str) -> _Column | None:
        """The prepared column a rule's field name refers to (after renames), or None if absent."""
        key = field.lower()
        if key in self._prepared:
            return self._prepared[key]
        cols = self.columns
        name = None
        renamed = self._renames.get(key)
        if renamed is not None:
            name = cols.reserved.get(renamed) or cols.names.get(renamed.lower())
        if name is None:
            name = cols.reserved.get(field) or cols.names.get(key)
        found = self._prepared[key] = cols.get(name) if name is not None else None
        return found

    def column(self, field: str) -> tuple[_Column, np.ndarray] | None:
        """The column a rule's field name refers to and its codes for these rows, or None if absent."""
        key = field.lower()
        if key in self._codes:
            return self._codes[key]
        column = self.prepared(field)
        found = None
        if column is not None:
            found = (column, column.codes if self._rows is None else column.codes[self._rows])
        self._codes[key] = found
        return found

    def evaluate(self, node: Node) -> BoolArray:
        """Boolean mask of the rows that satisfy `node`."""
        if isinstance(node, Match):
            found = self._leaves.get(node)
            if found is None:
                found = self._leaves[node] = self._leaf(node)
            return found
        if isinstance(node, And):
            # Leaves first: they are memoised and often false on every row, which ends the AND
            # before its NOTs and ORs are computed. The shared all-False/all-True masks are
            # recognised by identity, sparing numpy calls.
            acc: BoolArray | None = None
            for leaves_pass in (True, False):
                for child in node.children:
                    if isinstance(child, Match) is not leaves_pass:
                        continue
                    res = self.evaluate(child)
                    if res is self.false:
                        return self.false
                    if res is self.true:
                        continue
                    acc = res if acc is None else acc & res
                    if not acc.any():
                        return self.false
            return acc if acc is not None else self.true
        if isinstance(node, Or):
            acc = None
            for child in node.children:
                res = self.evaluate(child)
                if res is self.false:
                    continue
                if res is self.true:
                    return self.true
                acc = res if acc is None else acc | res
            return acc if acc is not None else self.false
        if isinstance(node, Not):
            res = self.evaluate(node.child)
            if res is self.false:
                return self.true
            return self.false if res is self.true else ~res
        if isinstance(node, Const):
            return self.true if node.value else self.false
        raise TypeError(f"unknown node {node!r}")

    def _leaf(self, m: Match) -> BoolArray:
        if m.field is None:
            return self._keyword(m)
        found = self.column(m.field)
        if m.op is Op.NULL:
            return self.true if found is None else found[1] == found[0].n_unique
        if found is None:
            return self.false
        column, codes = found
        if m.op is Op.EXISTS:
            present = codes != column.n_unique
            return present if m.values == ("true",) else ~present
        if m.op is Op.FIELDREF:
            return self._fieldref(column, codes, m.values[0])
        on_uniques = self.columns.leaf(column, m, m.field.lower())
        return self.false if on_uniques is None else on_uniques[codes]

    def _fieldref(self, column: _Column, codes: np.ndarray, other_field: str) -> BoolArray:
        other = self.column(other_field)
        if other is None:
            return self.false
        o_column, o_codes = other
        present = (codes != column.n_unique) & (o_codes != o_column.n_unique)
        if not present.any():
            return self.false
        left = pc.take(column.lower(), pa.array(np.where(present, codes, 0)))
        right = pc.take(o_column.lower(), pa.array(np.where(present, o_codes, 0)))
        return np.asarray(pc.equal(left, right).to_numpy(zero_copy_only=False), dtype=bool) & present

    def _keyword(self, m: Match) -> BoolArray:
        # A keyword matches when any field contains it (full-text semantics). ASCII lists are one
        # automaton scan of the batch's text (`keywords`); other contains-keywords one RE2 pass,
        # case-insensitive, over the row's fields joined by NUL, which no keyword holds, so a
        # match never spans two fields; other operators test field by field.
        if self.columns.expand is not None:
            return self.columns.expanded_keyword(m, self._rows)
        kw = Match("", Op.CONTAINS if m.op is Op.EQ else m.op, m.values, m.cased, m.flags)
        if kw.op is Op.CONTAINS and not kw.cased and scannable(kw.values):
            found = self.columns.text_rows(kw.values)
            return found if self._rows is None else found[self._rows]
        if kw.op is Op.CONTAINS and not kw.cased and not any("\0" in v for v in kw.values):
            text = self._row_text()
            if text is None:
                return self.false
            res = pc.match_substring_regex(text, pattern=keyword_pattern(kw), ignore_case=True)
            return np.asarray(res.to_numpy(zero_copy_only=False), dtype=bool)
        acc = self.false
        for name in self.columns.names.values():
            valid = self.columns.valid(name)
            if not (valid.any() if self._rows is None else valid[self._rows].any()):
                continue
            found = self.columns.keyword(name, kw)
            acc = acc | (found if self._rows is None else found[self._rows])
        return acc

    def _row_text(self) -> pa.Array | None:
        """Every native field of each of these rows joined by NUL (computed on first use)."""
        if self._text is None:
            batch = self.columns.batch
            arrays = []
            for name in self.columns.names.values():
                valid = self.columns.valid(name)
                if not (valid.any() if self._rows is None else valid[self._rows].any()):
                    continue
                array = batch.column(name)
                arrays.append(array if self._rows is None else array.take(pa.array(self._rows)))
            if not arrays:
                return None
            self._text = pc.binary_join_element_wise(
                *arrays, "\0", null_handling="replace", null_replacement=""
            )
        return self._text
