"""Evaluate compiled Sigma conditions over Arrow batches, vectorised.

Work per batch is shared across rules: each column is dictionary-encoded and lower-cased once,
each distinct leaf (field, operator, values) is computed once on the column's *distinct* values
and spread to rows with one numpy gather, and AND/OR/NOT are numpy boolean operations. String
tests run in Arrow's C++ kernels (RE2 for regular expressions); a pattern RE2 cannot run
(lookaround, backreferences) falls back to Python's `re` over the distinct values only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from watchkeeper.detect.sigma.keywords import BatchText, scannable
from watchkeeper.detect.sigma.literals import LITERAL_OPS, BoolArray, LiteralHits, LiteralIndex
from watchkeeper.detect.sigma.nodes import And, Const, Match, Node, Not, Op, Or
from watchkeeper.events import RESERVED_COLUMNS

#: Up to this many distinct values, literal leaves are tested in Python rather than by a kernel.
SMALL_DICTIONARY = 256


class _Column:
    """One column prepared for matching: distinct values (as read and lower-cased) and row codes.

    Null rows point at one extra slot (`len(uniques)`) that every leaf sets to False.
    """

    __slots__ = ("_strings", "codes", "hits", "lowered", "n_unique", "on_uniques", "uniques")

    def __init__(self, array: pa.Array) -> None:
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        encoded = pc.dictionary_encode(array, null_encoding="mask")
        self.uniques: pa.Array = encoded.dictionary
        self.n_unique = n_unique = len(self.uniques)
        indices = encoded.indices
        codes = np.frombuffer(indices.buffers()[1], dtype=np.int32)[indices.offset : indices.offset + len(indices)]
        if indices.null_count:
            valid = np.asarray(indices.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            self.codes: np.ndarray = np.where(valid, codes, n_unique).astype(np.intp)
        else:
            self.codes = codes.astype(np.intp)
        self.lowered: pa.Array | None = None
        self.hits: dict[str, LiteralHits | None] = {}  # literal scans, by index key
        self.on_uniques: dict[Match, BoolArray | None] = {}  # leaf results over the distinct values
        self._strings: dict[bool, list[str]] = {}

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


class BatchColumns:
    """The columns of one batch, prepared once and shared by every logsource step over it."""

    def __init__(self, batch: pa.RecordBatch, literals: LiteralIndex | None = None) -> None:
        self.batch = batch
        self.literals = literals
        self.names = {n.lower(): n for n in batch.schema.names if n not in RESERVED_COLUMNS}
        # Renames and logsource conditions may name reserved columns (`_outcome`, `_source`).
        self.reserved = {n: n for n in batch.schema.names if n in RESERVED_COLUMNS}
        self._columns: dict[str, _Column] = {}
        self._valid: dict[str, BoolArray] = {}
        self._keyword_results: dict[tuple[str, Match], BoolArray] = {}
        self._text: BatchText | None = None
        self._text_results: dict[tuple[str, ...], BoolArray] = {}

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
            res = pc.match_substring_regex(array, pattern=_pattern(kw), ignore_case=True)
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
            found = self._columns[name] = _Column(self.batch.column(name))
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
        result: BoolArray | None = None
        if self.literals is not None and self.literals.covers(m, index_key):
            hits = self.hits(column, index_key)
            if hits is not None:
                column.on_uniques[m] = found = hits.evaluate(m)
                return found
        if column.n_unique <= SMALL_DICTIONARY and m.op in LITERAL_OPS and (
            m.op is Op.EQ or column.n_unique * len(m.values) <= SMALL_DICTIONARY * 16
        ):
            result = match_strings(column.strings(m.cased), m)
        else:
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
        self._codes: dict[str, tuple[_Column, np.ndarray] | None] = {}
        self._leaves: dict[Match, BoolArray] = {}
        self._text: pa.Array | None = None
        self._false = np.zeros(self.n, dtype=bool)
        self._true = np.ones(self.n, dtype=bool)

    def column(self, field: str) -> tuple[_Column, np.ndarray] | None:
        """The column a rule's field name refers to and its codes for these rows, or None if absent."""
        key = field.lower()
        if key in self._codes:
            return self._codes[key]
        cols = self.columns
        name = None
        renamed = self._renames.get(key)
        if renamed is not None:
            name = cols.reserved.get(renamed) or cols.names.get(renamed.lower())
        if name is None:
            name = cols.reserved.get(field) or cols.names.get(key)
        found = None
        if name is not None:
            column = cols.get(name)
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
            acc: BoolArray | None = None
            for child in node.children:
                res = self.evaluate(child)
                acc = res if acc is None else acc & res
                if not acc.any():
                    return self._false
            return acc if acc is not None else self._true
        if isinstance(node, Or):
            acc = None
            for child in node.children:
                res = self.evaluate(child)
                acc = res if acc is None else acc | res
            return acc if acc is not None else self._false
        if isinstance(node, Not):
            return ~self.evaluate(node.child)
        if isinstance(node, Const):
            return self._true if node.value else self._false
        raise TypeError(f"unknown node {node!r}")

    def _leaf(self, m: Match) -> BoolArray:
        if m.field is None:
            return self._keyword(m)
        found = self.column(m.field)
        if m.op is Op.NULL:
            return self._true if found is None else found[1] == found[0].n_unique
        if found is None:
            return self._false
        column, codes = found
        if m.op is Op.EXISTS:
            present = codes != column.n_unique
            return present if m.values == ("true",) else ~present
        if m.op is Op.FIELDREF:
            return self._fieldref(column, codes, m.values[0])
        on_uniques = self.columns.leaf(column, m, m.field.lower())
        return self._false if on_uniques is None else on_uniques[codes]

    def _fieldref(self, column: _Column, codes: np.ndarray, other_field: str) -> BoolArray:
        other = self.column(other_field)
        if other is None:
            return self._false
        o_column, o_codes = other
        present = (codes != column.n_unique) & (o_codes != o_column.n_unique)
        if not present.any():
            return self._false
        left = pc.take(column.lower(), pa.array(np.where(present, codes, 0)))
        right = pc.take(o_column.lower(), pa.array(np.where(present, o_codes, 0)))
        return np.asarray(pc.equal(left, right).to_numpy(zero_copy_only=False), dtype=bool) & present

    def _keyword(self, m: Match) -> BoolArray:
        # A keyword matches when any field contains it (full-text semantics). Contains-keywords
        # are searched once in the row's fields joined by NUL, which no keyword holds, so a
        # match never spans two fields; one RE2 pass per keyword list, case-insensitive.
        kw = Match("", Op.CONTAINS if m.op is Op.EQ else m.op, m.values, m.cased, m.flags)
        if kw.op is Op.CONTAINS and not kw.cased and scannable(kw.values):
            found = self.columns.text_rows(kw.values)
            return found if self._rows is None else found[self._rows]
        if kw.op is Op.CONTAINS and not kw.cased and not any("\0" in v for v in kw.values):
            text = self._row_text()
            if text is None:
                return self._false
            res = pc.match_substring_regex(text, pattern=_pattern(kw), ignore_case=True)
            return np.asarray(res.to_numpy(zero_copy_only=False), dtype=bool)
        acc = self._false
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


def lower(values: pa.Array) -> pa.Array:
    """`utf8_lower`, by the ASCII kernel (six times faster, same result) when the text is ASCII."""
    buffers = values.buffers()
    if len(values) and buffers[2] is not None and pa.types.is_string(values.type):
        offsets = np.frombuffer(buffers[1], dtype=np.int32)[values.offset : values.offset + len(values) + 1]
        data = np.frombuffer(buffers[2], dtype=np.uint8)[int(offsets[0]) : int(offsets[-1])]
        if not len(data) or int(data.max()) < 0x80:
            return pc.ascii_lower(values)
    return pc.utf8_lower(values)


def match_strings(values: list[str], m: Match) -> BoolArray:
    """A literal leaf over a few distinct strings in Python: an Arrow kernel call costs more."""
    n = len(values)
    if m.op is Op.EQ:
        wanted = _value_set(m)
        return np.fromiter((v in wanted for v in values), dtype=bool, count=n)
    if m.op is Op.STARTSWITH:
        return np.fromiter((v.startswith(m.values) for v in values), dtype=bool, count=n)
    if m.op is Op.ENDSWITH:
        return np.fromiter((v.endswith(m.values) for v in values), dtype=bool, count=n)
    return np.fromiter((any(w in v for w in m.values) for v in values), dtype=bool, count=n)


@lru_cache(maxsize=65536)
def _value_set(m: Match) -> frozenset[str]:
    return frozenset(m.values)


def match_values(values: pa.Array, m: Match) -> BoolArray:
    """Test a leaf against an array of distinct strings (already lower-cased unless cased)."""
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    op = m.op
    if op is Op.EQ:
        res = pc.is_in(values, value_set=pa.array(m.values, pa.string()))
    elif op in (Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH) and len(m.values) <= 4:
        # A few literals: plain substring kernels beat compiling a regular expression.
        fn = {Op.CONTAINS: pc.match_substring, Op.STARTSWITH: pc.starts_with, Op.ENDSWITH: pc.ends_with}[op]
        acc = fn(values, pattern=m.values[0]).to_numpy(zero_copy_only=False)
        for v in m.values[1:]:
            acc = acc | fn(values, pattern=v).to_numpy(zero_copy_only=False)
        return np.asarray(acc, dtype=bool)
    elif op in (Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH, Op.GLOB, Op.REGEX):
        return _regex(values, _pattern(m))
    elif op is Op.CIDR:
        return _python(values, _cidr_test(m.values))
    elif op in (Op.LT, Op.LTE, Op.GT, Op.GTE):
        return _python(values, _compare_test(op, float(m.values[0])))
    else:
        raise ValueError(f"operator {op} is not evaluated on values")
    return np.asarray(res.to_numpy(zero_copy_only=False), dtype=bool)


@lru_cache(maxsize=65536)
def _pattern(m: Match) -> str:
    """One RE2-compatible pattern for a leaf's value list."""
    alternation = "|".join(
        v if m.op in (Op.GLOB, Op.REGEX) else re.escape(v) for v in m.values
    )
    if m.op is Op.STARTSWITH:
        body = f"^(?:{alternation})"
    elif m.op is Op.ENDSWITH:
        body = f"(?:{alternation})$"
    elif m.op is Op.REGEX and len(m.values) > 1:
        body = "|".join(f"(?:{v})" for v in m.values)
    else:
        body = alternation
    return f"(?{m.flags}){body}" if m.flags else body


_RE2_REJECTED: set[str] = set()


def _regex(values: pa.Array, pattern: str) -> BoolArray:
    if pattern not in _RE2_REJECTED:
        try:
            res = pc.match_substring_regex(values, pattern=pattern)
            return np.asarray(res.to_numpy(zero_copy_only=False), dtype=bool)
        except pa.ArrowInvalid:
            _RE2_REJECTED.add(pattern)  # lookaround, backreference …: RE2 cannot, Python can
    rx = _python_regex(pattern)
    return _python(values, lambda s: rx.search(s) is not None)


@lru_cache(maxsize=4096)
def _python_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _python(values: pa.Array, test: Callable[[str], bool]) -> BoolArray:
    return np.fromiter((v is not None and test(v) for v in values.to_pylist()), dtype=bool, count=len(values))


def _cidr_test(cidrs: tuple[str, ...]) -> Callable[[str], bool]:
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def test(s: str) -> bool:
        try:
            ip = ipaddress.ip_address(s.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip.version == n.version and ip in n for n in nets)

    return test


def _compare_test(op: Op, bound: float) -> Callable[[str], bool]:
    def test(s: str) -> bool:
        try:
            x = float(s)
        except ValueError:
            return False
        if op is Op.LT:
            return x < bound
        if op is Op.LTE:
            return x <= bound
        if op is Op.GT:
            return x > bound
        return x >= bound

    return test
