"""Columns assembled from pieces set on row subsets: last write wins, unset and empty are null."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from watchkeeper.sources.assign import Assignments


def test_last_write_wins_and_unset_rows_are_null() -> None:
    out = Assignments(5)
    out.set("f", np.array([0, 1, 2]), pa.array(["a", "b", "c"]))
    out.set("f", np.array([1]), "B")
    out.set("f", np.array([2]), pa.array([""]))
    out.set("g", np.array([], dtype=np.int64), "never")
    assert out.names() == ["f"]
    assert out.column("f").to_pylist() == ["a", "B", None, None, None]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=12).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.tuples(st.sets(st.integers(0, n - 1)), st.text(max_size=2)), max_size=6),
        )
    )
)
def test_same_as_setting_dict_keys_in_order(case: tuple[int, list[tuple[set[int], str]]]) -> None:
    n, writes = case
    out = Assignments(n)
    expected: list[str | None] = [None] * n
    for k, (rows, text) in enumerate(writes):
        ordered = np.array(sorted(rows), dtype=np.int64)
        values = [f"{text}{k}{r}" if k % 2 else text for r in ordered.tolist()]
        out.set("f", ordered, pa.array(values, pa.string()) if k % 2 else text)
        for r, v in zip(ordered.tolist(), values, strict=True):
            expected[r] = v or None
    if writes and any(rows for rows, _ in writes):
        assert out.column("f").to_pylist() == expected
