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
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from watchkeeper.detect.sigma.nodes import And, Const, Match, Node, Not, Op, Or
from watchkeeper.events import RESERVED_COLUMNS

BoolArray: TypeAlias = npt.NDArray[np.bool_]


class _Column:
    """One column prepared for matching: distinct values (as read and lower-cased) and row codes."""

    __slots__ = ("codes", "lowered", "present", "uniques")

    def __init__(self, array: pa.Array) -> None:
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        encoded = pc.dictionary_encode(array, null_encoding="mask")
        self.uniques: pa.Array = encoded.dictionary
        n_unique = len(self.uniques)
        # Null rows point at one extra slot that every leaf sets to False.
        self.codes: np.ndarray = (
            pc.fill_null(encoded.indices, n_unique).to_numpy(zero_copy_only=False).astype(np.intp, copy=False)
        )
        self.present: BoolArray = self.codes != n_unique
        self.lowered: pa.Array | None = None

    def lower(self) -> pa.Array:
        """The distinct values lower-cased (computed on first use)."""
        if self.lowered is None:
            self.lowered = pc.utf8_lower(self.uniques)
        return self.lowered

    def spread(self, on_uniques: BoolArray) -> BoolArray:
        """Row results from results over the distinct values."""
        return np.append(on_uniques, False)[self.codes]


class BatchMatcher:
    """Evaluates conditions over one batch, remembering columns and leaves it has computed."""

    def __init__(self, batch: pa.RecordBatch, renames: Mapping[str, str] | None = None) -> None:
        self.batch = batch
        self.n = batch.num_rows
        self._names = {n.lower(): n for n in batch.schema.names if n not in RESERVED_COLUMNS}
        self._renames = {k.lower(): v for k, v in (renames or {}).items()}
        self._columns: dict[str, _Column | None] = {}
        self._leaves: dict[Match, BoolArray] = {}
        self._false = np.zeros(self.n, dtype=bool)
        self._true = np.ones(self.n, dtype=bool)

    def column(self, field: str) -> _Column | None:
        """The prepared column a rule's field name refers to, or None when the batch lacks it."""
        key = field.lower()
        if key in self._columns:
            return self._columns[key]
        name = None
        renamed = self._renames.get(key)
        if renamed is not None:
            name = self._names.get(renamed.lower())
        if name is None:
            name = self._names.get(key)
        prepared = _Column(self.batch.column(name)) if name is not None else None
        self._columns[key] = prepared
        return prepared

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
        col = self.column(m.field)
        if m.op is Op.NULL:
            return self._true if col is None else ~col.present
        if col is None:
            return self._false
        if m.op is Op.EXISTS:
            return col.present if m.values == ("true",) else ~col.present
        if m.op is Op.FIELDREF:
            other = self.column(m.values[0])
            if other is None:
                return self._false
            a = col.lower()
            b = other.lower()
            left = pc.take(a, pa.array(np.where(col.present, col.codes, 0)))
            right = pc.take(b, pa.array(np.where(other.present, other.codes, 0)))
            eq = pc.fill_null(pc.equal(left, right), False).to_numpy(zero_copy_only=False)
            return eq & col.present & other.present
        return col.spread(match_values(col.uniques if m.cased else col.lower(), m))

    def _keyword(self, m: Match) -> BoolArray:
        # A keyword matches when any field contains it (full-text semantics).
        kw = Match("", Op.CONTAINS if m.op is Op.EQ else m.op, m.values, m.cased, m.flags)
        acc = self._false
        for key in self._names:
            col = self.column(key)
            if col is not None:
                acc = acc | col.spread(match_values(col.uniques if m.cased else col.lower(), kw))
        return acc


def match_values(values: pa.Array, m: Match) -> BoolArray:
    """Test a leaf against an array of distinct strings (already lower-cased unless cased)."""
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    op = m.op
    if op is Op.EQ:
        res = pc.is_in(values, value_set=pa.array(m.values, pa.string()))
    elif op in (Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH) and len(m.values) == 1:
        fn = {Op.CONTAINS: pc.match_substring, Op.STARTSWITH: pc.starts_with, Op.ENDSWITH: pc.ends_with}[op]
        res = fn(values, pattern=m.values[0])
    elif op in (Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH, Op.GLOB, Op.REGEX):
        return _regex(values, _pattern(m))
    elif op is Op.CIDR:
        return _python(values, _cidr_test(m.values))
    elif op in (Op.LT, Op.LTE, Op.GT, Op.GTE):
        return _python(values, _compare_test(op, float(m.values[0])))
    else:
        raise ValueError(f"operator {op} is not evaluated on values")
    return np.asarray(pc.fill_null(res, False).to_numpy(zero_copy_only=False), dtype=bool)


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
            return np.asarray(pc.fill_null(res, False).to_numpy(zero_copy_only=False), dtype=bool)
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
