"""Leaf tests over arrays of distinct values: Arrow kernels for many values, Python for a few.

An Arrow kernel call costs tens of microseconds whatever its input, and a regular expression
compiled per call (as `match_substring_regex` does) hundreds, so a column's few distinct values
are tested in Python against cached compiled patterns, and many values in Arrow's kernels.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import re2

from watchkeeper.detect.sigma.literals import LITERAL_OPS, BoolArray, value_set
from watchkeeper.detect.sigma.nodes import Match, Op

#: Up to this many distinct values, literal leaves are tested in Python.
SMALL_DICTIONARY = 256
#: Up to this many, regular expressions too (about 3 µs a value against a kernel's 200-800 µs
#: to compile a pattern and warm its DFA on every call).
SMALL_REGEX = 128


def match_few(values: list[str], m: Match, memo: RegexMemo | None = None) -> BoolArray | None:
    """A leaf over a few distinct strings, in Python; None when a kernel would be cheaper."""
    n = len(values)
    if m.op in LITERAL_OPS:
        if n > SMALL_DICTIONARY or (m.op is not Op.EQ and n * len(m.values) > SMALL_DICTIONARY * 16):
            return None
        return match_strings(values, m)
    if m.op in (Op.GLOB, Op.REGEX) and n <= SMALL_REGEX:
        pattern = _pattern(m)
        rx = _re2(pattern)
        if rx is None:
            return None
        if memo is None:
            return np.fromiter((rx.search(v) is not None for v in values), dtype=bool, count=n)
        return memo.test(pattern, rx, values)
    return None


class RegexMemo:
    """Regular-expression outcomes per value, kept across batches: images, users and pipe names recur.

    A search costs ~3 µs, a lookup ~0.1. Bounded: past `LIMIT` outcomes the memo starts afresh.
    """

    LIMIT = 200_000

    def __init__(self) -> None:
        self._outcomes: dict[str, dict[str, bool]] = {}
        self._size = 0

    def test(self, pattern: str, rx: re2._Regexp, values: list[str]) -> BoolArray:
        """Which of `values` the pattern finds a match in."""
        known = self._outcomes.get(pattern)
        if known is None:
            if self._size > self.LIMIT:
                self._outcomes.clear()
                self._size = 0
            known = self._outcomes[pattern] = {}
        out = np.empty(len(values), dtype=bool)
        for i, value in enumerate(values):
            found = known.get(value)
            if found is None:
                found = known[value] = rx.search(value) is not None
                self._size += 1
            out[i] = found
        return out


@lru_cache(maxsize=4096)
def _re2(pattern: str) -> re2._Regexp | None:
    """The pattern compiled once by RE2 (the engine Arrow's kernels run); None if RE2 refuses it."""
    try:
        return re2.compile(pattern)
    except re2.error:
        return None


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
        wanted = value_set(m)
        return np.fromiter((v in wanted for v in values), dtype=bool, count=n)
    if m.op is Op.STARTSWITH:
        return np.fromiter((v.startswith(m.values) for v in values), dtype=bool, count=n)
    if m.op is Op.ENDSWITH:
        return np.fromiter((v.endswith(m.values) for v in values), dtype=bool, count=n)
    return np.fromiter((any(w in v for w in m.values) for v in values), dtype=bool, count=n)


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


def keyword_pattern(m: Match) -> str:
    """The RE2 pattern of a leaf's value list (keyword searches run it case-insensitively)."""
    return _pattern(m)


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
