"""Batch conventions shared by every part: case-folded native columns."""

from __future__ import annotations

import pyarrow as pa

from watchkeeper.events import fold_case


def test_columns_named_alike_but_for_case_are_merged_into_the_first() -> None:
    batch = pa.record_batch({
        "Image": ["a", None, None],
        "_source": ["s", "s", "s"],
        "image": [None, "b", "x"],
        "IMAGE": [None, None, "c"],
        "Other": ["1", "2", "3"],
    })
    folded = fold_case(batch)
    assert folded.schema.names == ["Image", "_source", "Other"]
    assert folded.column("Image").to_pylist() == ["a", "b", "x"]  # the first spelling's value wins a row


def test_a_batch_without_such_columns_is_returned_as_it_is() -> None:
    batch = pa.record_batch({"Image": ["a"], "_time": pa.array([None], pa.timestamp("us", tz="UTC"))})
    assert fold_case(batch) is batch


def test_columns_of_other_types_are_merged_as_text() -> None:
    batch = pa.record_batch({"Port": pa.array([None, 22], pa.int64()), "port": pa.array(["80", None])})
    assert fold_case(batch).column("Port").to_pylist() == ["80", "22"]
