"""JSON lines read in blocks give the rows the line-by-line path gives, whatever the lines hold.

Blocks are read by the C builder where it is built, else by pyarrow: every comparison runs both.
"""

from __future__ import annotations

import io
import os
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from watchkeeper.sources import flatjson
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.jsonblocks import _built, _by_line, iter_text_blocks
from watchkeeper.sources.lines import iter_json_objects, number_text, text_of


def by_blocks(
    data: bytes, block_bytes: int, max_line: int = 1 << 20
) -> tuple[dict[int, dict[str, Any]], int]:
    """The rows and dead-letter count of a block read, the same by the C builder and by pyarrow."""
    fast = _by_blocks(data, block_bytes, max_line)
    os.environ[flatjson.DISABLE_VARIABLE] = "1"
    try:
        slow = _by_blocks(data, block_bytes, max_line)
    finally:
        del os.environ[flatjson.DISABLE_VARIABLE]
    assert fast == slow
    return fast


def _by_blocks(data: bytes, block_bytes: int, max_line: int) -> tuple[dict[int, dict[str, Any]], int]:
    dead = DeadLetter()
    rows: dict[int, dict[str, Any]] = {}
    for block in iter_text_blocks(io.BytesIO(data), "mem", dead, max_line=max_line, block_bytes=block_bytes):
        assert block.table.num_rows == len(block.records)
        for number, row in zip(block.records.to_pylist(), block.table.to_pylist(), strict=True):
            assert number not in rows
            rows[number] = {k: v for k, v in row.items() if v is not None}
    return rows, dead.count


def by_lines(data: bytes, max_line: int = 1 << 20) -> tuple[dict[int, dict[str, Any]], int]:
    dead = DeadLetter()
    rows: dict[int, dict[str, Any]] = {}
    for number, obj in iter_json_objects(io.BytesIO(data), "mem", dead, max_line=max_line):
        rows[number] = {k: t for k, v in obj.items() if (t := text_of(v)) is not None}
    return rows, dead.count


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["2024-01-02", "2024-01-02 03:04:05", "2024-01-02T03:04:05Z", "", "1e5"]),
)
values = st.one_of(
    scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=3), scalars, max_size=2)
)
objects = st.dictionaries(st.sampled_from(["a", "b", "ts", "A", "x.y", "_path"]), values, max_size=5)
lines = st.one_of(
    objects.map(orjson.dumps),
    st.sampled_from([b"", b"  ", b"[1, 2]", b"not json", b'"text"', b"{}", b'{"a": 1}\r', b"\xff\xfe",
                    b'{"a": "caf\xe9"}']),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(lines, max_size=30), st.sampled_from([16, 64, 4096]))
def test_blocks_read_as_lines_do(raw: list[bytes], block_bytes: int) -> None:
    data = b"\n".join(raw)
    assert by_blocks(data, block_bytes) == by_lines(data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
def test_floats_print_as_the_line_path_does(numbers: list[float]) -> None:
    data = b"\n".join(orjson.dumps({"f": f, "l": [f, f]}) for f in numbers)
    rows, dead = by_blocks(data, 1 << 20)
    assert dead == 0
    texts = [number_text(f) for f in numbers]
    assert [rows[i + 1]["f"] for i in range(len(numbers))] == texts
    assert [rows[i + 1]["l"] for i in range(len(numbers))] == [f"{t},{t}" for t in texts]


def test_whole_numbers_read_alike_as_integers_or_floats() -> None:
    rows, _ = by_blocks(b'{"a": 2230.0, "b": [1, 1.5]}\n{"a": 7, "b": 2}\n', 1 << 20)
    assert rows == {1: {"a": "2230", "b": "1,1.5"}, 2: {"a": "7", "b": "2"}}


def test_integers_beyond_float_precision_keep_every_digit() -> None:
    # pyarrow reads a list mixing integers and floats as floats: 2**53 + 1 would lose its last digit.
    data = b'{"a": [9007199254740993, 0.0]}\n{"a": [1, 2]}\n'
    assert by_blocks(data, 1 << 20) == by_lines(data)
    rows, _ = by_blocks(data, 1 << 20)
    assert rows[1]["a"] == "9007199254740993,0"


def test_overlong_lines_are_dead_lettered_with_their_numbers() -> None:
    good = b'{"a": "x"}'
    data = b"\n".join([good, b'{"a": "' + b"y" * 200 + b'"}', good, b"z" * 1000, good])
    rows, dead = by_blocks(data, block_bytes=64, max_line=100)
    assert sorted(rows) == [1, 3, 5] and dead == 2
    assert (rows, dead) == by_lines(data, max_line=100)


def test_a_line_not_utf8_is_dead_lettered_not_stored() -> None:
    # pyarrow's reader takes such bytes as they stand; JSON is UTF-8, so the line is not JSON.
    good = b'{"a": "x"}'
    data = b"\n".join([good, b'{"a": "caf\xe9"}', good]) + b"\n"
    rows, dead = by_blocks(data, block_bytes=1 << 20)
    assert sorted(rows) == [1, 3] and dead == 1
    assert (rows, dead) == by_lines(data)


def test_fields_that_change_type_fall_back_without_loss() -> None:
    data = b'{"a": 1}\n{"a": "one"}\n{"a": [1, "x"]}\n{"a": {"b": 2}}\n'
    rows, dead = by_blocks(data, 1 << 20)
    assert dead == 0
    assert [rows[i]["a"] for i in (1, 2, 3, 4)] == ["1", "one", "1,x", '{"b":2}']


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 120), max_size=40), st.sampled_from([8, 33, 100]), st.sampled_from([64, 4096]))
def test_long_lines_are_found_wherever_they_fall(sizes: list[int], max_line: int, block_bytes: int) -> None:
    data = b"\n".join(orjson.dumps({"a": "y" * n}) for n in sizes)
    assert by_blocks(data, block_bytes, max_line) == by_lines(data, max_line)


@settings(max_examples=300, deadline=None)
@given(st.lists(objects.map(orjson.dumps), min_size=1, max_size=30))
def test_the_c_builder_takes_valid_blocks_as_the_line_path_reads_them(raw: list[bytes]) -> None:
    fast = flatjson.text_columns()
    if fast is None:
        assert not flatjson.available() or os.environ.get(flatjson.DISABLE_VARIABLE)
        return
    block = b"\n".join(raw) + b"\n"
    table = _built(block, fast, 1 << 20)
    reference = _by_line(block, 1, "mem", DeadLetter(), 1 << 20)
    assert reference is not None
    nested = any(type(v) is dict or (type(v) is list and any(type(i) is dict for i in v))
                 for line in raw for v in orjson.loads(line).values())
    if table is None:  # only for what C leaves to Python: objects; or rows without a value
        assert nested or reference.table.num_columns == 0
        return
    # The same columns in the same order (the lake's schema), the same values.
    assert table.column_names == reference.table.column_names
    assert table.to_pylist() == reference.table.to_pylist()
