"""Keyword search over a batch's joined text agrees with RE2's case-insensitive search per field."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from watchkeeper.detect.sigma.keywords import BatchText, scannable

KELVIN, LONG_S = "\u212a", "\u017f"


def reference(batch: pa.RecordBatch, values: tuple[str, ...]) -> np.ndarray:
    """What the engine computed before: RE2, case-insensitive, field by field."""
    pattern = "|".join(re.escape(v) for v in values)
    out = np.zeros(batch.num_rows, dtype=bool)
    for array in batch.columns:
        if pa.types.is_null(array.type):
            continue
        res = pc.match_substring_regex(array.cast(pa.string()), pattern=pattern, ignore_case=True)
        out |= np.asarray(pc.fill_null(res, False).to_numpy(zero_copy_only=False), dtype=bool)
    return out


def rows(batch: pa.RecordBatch, values: tuple[str, ...]) -> list[int]:
    assert scannable(values)
    return np.flatnonzero(BatchText(batch, batch.schema.names).rows_with(values)).tolist()


def test_a_match_across_two_values_is_none_and_hides_none() -> None:
    # "sekurlsa::" would match across values 0 and 1; "lsa::" lies inside value 1 alone.
    batch = pa.record_batch({"a": ["xx sekur", "lsa::", "nothing"]})
    assert rows(batch, ("sekurlsa::",)) == []
    assert rows(batch, ("sekurlsa::", "lsa::")) == [1]
    # Across columns too: the end of one column runs into the start of the next.
    batch = pa.record_batch({"a": ["q", "ab"], "b": ["cd", "q"]})
    assert rows(batch, ("abcd",)) == []
    assert rows(batch, ("abcd", "cd")) == [0]


def test_case_and_characters_re2_folds_to_ascii() -> None:
    batch = pa.record_batch({"a": ["SEKURLSA::LogonPasswords", f"{LONG_S}ekurl{LONG_S}a::", "kerb", f"{KELVIN}erb"]})
    assert rows(batch, ("sekurlsa::",)) == [0, 1]
    assert rows(batch, ("kerb",)) == [2, 3]


def test_null_slots_and_sliced_arrays() -> None:
    # A null slot whose offsets still cover bytes: those bytes are no value.
    data = pa.py_buffer(b"mimikatzmimikatz")
    offsets = pa.py_buffer(np.array([0, 8, 16], dtype=np.int32).tobytes())
    validity = pa.py_buffer(np.packbits([1, 0], bitorder="little").tobytes())
    array = pa.Array.from_buffers(pa.string(), 2, [validity, offsets, data])
    assert rows(pa.record_batch({"a": array}), ("mimikatz",)) == [0]
    sliced = pa.array(["mimikatz", "x", "y", "mimikatz"])[1:3]
    assert rows(pa.record_batch({"a": sliced, "b": pa.nulls(2, pa.string())}), ("mimikatz",)) == []


def test_large_strings_and_other_types() -> None:
    batch = pa.record_batch({"a": pa.array(["a", "Mimikatz"], pa.large_string()), "b": pa.array([5, 6])})
    assert rows(batch, ("mimikatz",)) == [1]
    assert rows(batch, ("5",)) == [0]


def test_what_is_not_scannable() -> None:
    assert not scannable(())
    assert not scannable(("",))
    assert not scannable(("caf\u00e9",))
    assert not scannable(("a\0b",))


_TEXT = st.text(alphabet=st.sampled_from(["a", "B", "k", "K", KELVIN, "s", "S", LONG_S, ":", " ", "\u00e9"]),
                max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    columns=st.lists(st.lists(st.one_of(st.none(), _TEXT), min_size=4, max_size=4), min_size=1, max_size=3),
    values=st.lists(st.text(alphabet="aBkKsS: ", min_size=1, max_size=4), min_size=1, max_size=3),
)
def test_agrees_with_re2(columns: list[list[str | None]], values: list[str]) -> None:
    batch = pa.record_batch({f"c{i}": pa.array(c, pa.string()) for i, c in enumerate(columns)})
    wanted = tuple(values)
    assert rows(batch, wanted) == np.flatnonzero(reference(batch, wanted)).tolist()


def test_a_long_keyword_list_is_searched_in_parts() -> None:
    values = tuple(f"word{i:03d}" for i in range(150))
    batch = pa.record_batch({"a": ["x WORD000 y", "word149", "word150", "Word077"], "b": [None, None, "word1", "z"]})
    assert rows(batch, values) == [0, 1, 3]
    assert rows(batch, values) == np.flatnonzero(reference(batch, values)).tolist()
