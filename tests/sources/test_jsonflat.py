"""Nested JSON flattening and the bounded JSON record reader."""

from __future__ import annotations

import io
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.jsonflat import JsonRecords, flatten

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=20,
)


def test_flatten_dots_lists_booleans_and_depth() -> None:
    obj = {"a": {"b": {"c": 1}}, "l": [1, {"x": 2}], "t": True, "n": None, "e": {}, "s": "v"}
    assert flatten(obj) == {"a.b.c": "1", "l": '[1,{"x":2}]', "t": "true", "s": "v"}
    assert flatten(obj, max_depth=2) == {"a.b": '{"c":1}', "l": '[1,{"x":2}]', "t": "true", "s": "v"}
    assert flatten({"r": {"k": "v"}}, keep_json={"r"}) == {"r": '{"k":"v"}', "r.k": "v"}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=4), JSON, max_size=5), st.integers(1, 4))
def test_flatten_values_are_strings_and_depth_is_bounded(obj: dict[str, Any], depth: int) -> None:
    flat = flatten(obj, max_depth=depth)
    assert all(isinstance(v, str) for v in flat.values())
    # Keys without dots of their own nest at most `depth` deep.
    assert all(len(k.split(".")) <= depth for k in flat if all("." not in p for p in _keys(obj)))


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for key, v in value.items() for k in (key, *_keys(v))]
    return []


def records(data: bytes) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """Objects read from `data` and the dead-letter messages."""
    said: list[str] = []
    out = list(JsonRecords().read(io.BytesIO(data), "f", DeadLetter(announce=said.append)))
    return out, said


def test_shapes_lines_array_wrappers_and_pretty() -> None:
    objs = [{"a": 1}, {"a": 2}]
    expected = [(1, {"a": 1}), (2, {"a": 2})]
    assert records(b"\n".join(orjson.dumps(o) for o in objs)) == (expected, [])
    assert records(orjson.dumps(objs)) == (expected, [])
    assert records(orjson.dumps({"value": objs}, option=orjson.OPT_INDENT_2)) == (expected, [])
    assert records(b"\xef\xbb\xbf" + orjson.dumps({"Records": objs})) == (expected, [])


def test_broken_first_line_of_json_lines_keeps_the_rest() -> None:
    out, said = records(b'{"a": \n{"a": 2}\n[3]\n{"a": 4}\n')
    assert out == [(2, {"a": 2}), (4, {"a": 4})]
    assert [m.split(":")[0] for m in said] == ["f, record 1", "f, record 3"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1024))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    out, _ = records(data)
    assert all(isinstance(o, dict) for _, o in out)
