"""The evaluator's shortcuts give the rows its plain paths give."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchkeeper.detect.sigma import literals
from watchkeeper.detect.sigma.evaluate import BatchColumns, BatchMatcher, Cardinality
from watchkeeper.detect.sigma.literals import LiteralIndex
from watchkeeper.detect.sigma.nodes import (
    And,
    CompiledRule,
    LogSource,
    Match,
    Not,
    Op,
    Or,
    necessary_clauses,
    with_facts,
)
from watchkeeper.detect.sigma.routing import Routes
from watchkeeper.detect.sigma.values import SMALL_DICTIONARY, match_few, match_values


class _AllDistinct(Cardinality):
    """Takes every column as all distinct, as a long script-block column would be."""

    def distinct(self, name: str) -> bool:
        return True


_VALUE = st.one_of(st.none(), st.text(alphabet="abAB.\\ x", max_size=6))
_LEAF = st.builds(
    Match,
    field=st.just("f"),
    op=st.sampled_from([Op.EQ, Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH]),
    values=st.lists(st.text(alphabet="ab.\\x", min_size=1, max_size=3), min_size=1, max_size=4).map(tuple),
)


def _rule(leaf: Match) -> CompiledRule:
    return with_facts(CompiledRule(id="r", title="r", level="low", status="", tags=(), logsource=LogSource(),
                                   condition=leaf, path="r.yml"))


@settings(max_examples=200, deadline=None)
@given(values=st.lists(_VALUE, min_size=1, max_size=40), leaf=_LEAF)
def test_literal_index_and_distinct_columns_agree_with_kernels(values: list[str | None], leaf: Match) -> None:
    batch = pa.record_batch({"f": pa.array(values, pa.string())})
    plain = BatchMatcher(BatchColumns(batch)).evaluate(leaf)
    indexed = BatchMatcher(BatchColumns(batch, LiteralIndex([_rule(leaf)]))).evaluate(leaf)
    distinct = BatchMatcher(BatchColumns(batch, LiteralIndex([_rule(leaf)]), _AllDistinct())).evaluate(leaf)
    expected = [v is not None and _holds(v.lower(), leaf) for v in values]
    assert plain.tolist() == indexed.tolist() == distinct.tolist() == expected


_LINES = st.lists(st.sampled_from(["ab", "a.b\\x", "", "xx ab", "b\r", "aab.x"]), max_size=4).map("\n".join)


_LINE_LEAF = st.builds(
    Match,
    field=st.just("f"),
    op=st.sampled_from([Op.EQ, Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH]),
    values=st.lists(st.sampled_from(["ab\r", "a.b", "b\\x", "xx ab", "aab", "b\r\n1", "\nab", "1\nab"]),
                    min_size=1, max_size=3).map(tuple),  # long enough to be indexed; some across lines
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.one_of(st.none(), _LINES), min_size=1, max_size=30), leaf=_LINE_LEAF)
def test_scanning_distinct_lines_finds_what_a_whole_scan_finds(
    lines: list[str | None], leaf: Match, monkeypatch_module: pytest.MonkeyPatch
) -> None:
    # A numbered line makes the values distinct, past the few-values path that needs no scan.
    values = [None if v is None else f"{v}\n{i}" if i % 2 else f"{i}\n{v}" for i, v in enumerate(lines)]
    # Every scan by lines, whatever the values' length and however often their lines repeat.
    monkeypatch_module.setattr(literals, "LINE_SCAN_MIN_BYTES", 0)
    monkeypatch_module.setattr(literals, "LINE_SCAN_MAX_SHARE", 1.0)
    batch = pa.record_batch({"f": pa.array(values, pa.string())})
    index = LiteralIndex([_rule(leaf)])
    by_lines = BatchMatcher(BatchColumns(batch, index)).evaluate(leaf)
    expected = [v is not None and _holds(v.lower(), leaf) for v in values]
    assert by_lines.tolist() == expected


def test_long_values_of_repeated_lines_are_scanned_by_lines() -> None:
    # PowerShell's module context: a long command line repeated in every event, a few lines that vary.
    context = "        Host Application = powershell.exe -nop -w hidden -enc " + "QQBC" * 300
    values = [f"        Severity = Informational\r\n{context}\r\n        Sequence Number = {i}\r\n" for i in range(50)]
    leaf = Match("ContextInfo", Op.CONTAINS, ("-enc", "sequence number = 7\r", "mimikatz"))
    index = LiteralIndex([_rule(leaf)])
    batch = pa.record_batch({"ContextInfo": pa.array(values, pa.string())})
    found = BatchMatcher(BatchColumns(batch, index, _AllDistinct())).evaluate(leaf)
    assert index._line_scans == {"contextinfo": 0}  # scanned by lines, and they paid
    assert found.tolist() == [True] * 50


def _holds(value: str, m: Match) -> bool:
    tests = {Op.EQ: str.__eq__, Op.CONTAINS: str.__contains__, Op.STARTSWITH: str.startswith,
             Op.ENDSWITH: str.endswith}
    return any(tests[m.op](value, v) for v in m.values)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.text(alphabet="aA1.\\ \n", max_size=6), min_size=1, max_size=SMALL_DICTIONARY // 2),
    pattern=st.sampled_from([r"^a", r"\d$", r"a.*1", r"(?i)A\.", r"\\ ", r"^$", r"a$", r"(?s)a.1"]),
    op=st.sampled_from([Op.REGEX, Op.GLOB]),
)
def test_few_values_match_as_the_kernel_does(values: list[str], pattern: str, op: Op) -> None:
    m = Match("f", op, (pattern,), cased=True)
    few = match_few(values, m)
    assert few is not None
    assert few.tolist() == match_values(pa.array(values, pa.string()), m).tolist()


def test_a_column_of_nulls_and_repeats_taken_as_distinct() -> None:
    batch = pa.record_batch({"f": pa.array([None, "x", "x", None, "y"])})
    columns = BatchColumns(batch, None, _AllDistinct())
    column = columns.get("f")
    assert column.n_unique == 3
    assert column.codes.tolist() == [3, 0, 1, 3, 2]
    leaf = Match("f", Op.EQ, ("x",))
    assert np.flatnonzero(BatchMatcher(columns).evaluate(leaf)).tolist() == [1, 2]


def test_requirements_of_a_condition() -> None:
    image = Match("Image", Op.ENDSWITH, ("\\cmd.exe",))
    command = Match("CommandLine", Op.CONTAINS, ("whoami", "net user"))
    short = Match("CommandLine", Op.CONTAINS, ("/c",))  # too short to index
    other = Match("ParentImage", Op.ENDSWITH, ("\\winword.exe",))
    condition = And((image, Or((command, other)), short, Not(Match("User", Op.EQ, ("system",)))))
    assert necessary_clauses(condition, 3) == (
        (("image", frozenset({"\\cmd.exe"})),),
        (("commandline", frozenset({"whoami", "net user"})), ("parentimage", frozenset({"\\winword.exe"}))),
    )
    assert necessary_clauses(Or((image, short)), 3) == ()


_CHANNEL = st.one_of(st.none(), st.sampled_from(["Security", "SECURITY", "System", "Microsoft-Windows-Sysmon/Operational"]))
_EVENT_ID = st.one_of(st.none(), st.sampled_from(["1", "3", "4688", "10"]))


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(_CHANNEL, _EVENT_ID), min_size=1, max_size=30),
    channels=st.frozensets(st.sampled_from(["security", "system", "microsoft-windows-sysmon/operational"])),
    event_ids=st.one_of(st.none(), st.frozensets(st.sampled_from(["1", "3", "4688"]), min_size=1)),
    with_ids=st.booleans(),
)
def test_routes_select_the_rows_a_row_by_row_test_selects(
    rows: list[tuple[str | None, str | None]], channels: frozenset[str], event_ids: frozenset[str] | None,
    with_ids: bool,
) -> None:
    data = {"Channel": pa.array([c for c, _ in rows], pa.string())}
    if with_ids:
        data["EventID"] = pa.array([e for _, e in rows], pa.string())
    batch = pa.record_batch(data)
    conditions = (("Channel", channels),) + ((("EventID", event_ids),) if event_ids is not None else ())
    routes = Routes(BatchMatcher(BatchColumns(batch)), sorted({name for name, _ in conditions} | {"Channel"}))
    expected = [
        i for i, (c, e) in enumerate(rows)
        if c is not None and c.lower() in channels
        and (event_ids is None or (with_ids and e is not None and e in event_ids))
    ]
    found = routes.rows(conditions)
    assert (found.tolist() if found is not None else []) == expected


def test_large_string_columns() -> None:
    leaf = Match("f", Op.CONTAINS, ("cmd.exe",))
    batch = pa.record_batch({"f": pa.array(["C:\\Windows\\cmd.exe", None, "x", "cmd.ex"], pa.large_string())})
    for memo in (None, _AllDistinct()):
        columns = BatchColumns(batch, LiteralIndex([_rule(leaf)]), memo)
        assert np.flatnonzero(BatchMatcher(columns).evaluate(leaf)).tolist() == [0]


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    """A monkeypatch that hypothesis' repeated examples may share (the function-scoped one may not)."""
    with pytest.MonkeyPatch.context() as patch:
        yield patch
