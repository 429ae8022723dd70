"""Flat JSON lines read in C (`_flatjson.c`): the fast path of the Windows JSON and JSON-lines readers.

NXLog and OTRF write a Windows event as one flat JSON object a line. Read in Python, each line
became a dict, a string per key and value, and a list per column that `pa.array` walked again:
most of a hunt's time (docs/performance.md). The C builder parses a line and appends the values'
text straight to Arrow column buffers, asking Python once per field spelling and route whether
a field is kept.

It takes only lines it renders exactly as the Python reader does — `ColumnBuilder.add_flat` for
Windows events, `lines.text_of` for JSON lines (Zeek, `--map`; floats too) — and declines every
other line before storing anything: the Python reader takes those, and stays the reference the
tests hold the C builder to. Where the extension was not built (no C compiler at install),
everything goes the Python way.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

try:
    from watchkeeper.sources import _flatjson
except ImportError:  # not built: the Python reader does all the work, more slowly
    _flatjson = None  # type: ignore[assignment]

#: Set (to anything) to read every line in Python: for comparing the two readers.
DISABLE_VARIABLE = "WATCHKEEPER_PYTHON_READER"


def available() -> bool:
    """Whether the C builder was built with this installation."""
    return _flatjson is not None


def _enabled() -> bool:
    return _flatjson is not None and not os.environ.get(DISABLE_VARIABLE)


class FlatColumns:
    """Columns of flat JSON lines, built in C: `add` a line as a row, `build` the batch's arrays."""

    __slots__ = ("_builder", "add", "add_lines")

    def __init__(self, decide: Callable[[str | None, str], bool], route: str | None, jsonlines: bool = False) -> None:
        assert _flatjson is not None
        self._builder = _flatjson.Builder(decide, route, jsonlines=jsonlines)
        #: add(line, row, number) -> the record number (a `RecordNumber` the line gives, else
        #: `number`), or -1 when the line is the Python reader's. Bound once: called per line.
        self.add: Callable[[bytes, int, int], int] = self._builder.add
        #: add_lines(block, row) -> (how many of the block's lines became rows from `row` on,
        #: whether all did): it stops at the first line declined.
        self.add_lines: Callable[[bytes, int], tuple[int, bool]] = self._builder.add_lines

    def build(self, n: int) -> dict[str, tuple[int, pa.Array]]:
        """The batch's columns of `n` rows: spelling -> (first row with a value, values), in that order."""
        return {
            name: (first, pa.Array.from_buffers(
                pa.string(), n, [None if valid is None else pa.py_buffer(valid), pa.py_buffer(offsets),
                                 pa.py_buffer(data)]
            ))
            for name, first, valid, offsets, data in self._builder.build(n)
        }


def flat_columns(decide: Callable[[str | None, str], bool], route: str | None) -> FlatColumns | None:
    """A C builder deciding kept fields with `decide(route value, field)`; None when unavailable or disabled."""
    return FlatColumns(decide, route) if _enabled() else None


def text_columns() -> FlatColumns | None:
    """A C builder of JSON lines' text columns (`lines.text_of`); None when unavailable or disabled."""
    return FlatColumns(_keep_all, None, jsonlines=True) if _enabled() else None


def _keep_all(route: str | None, key: str) -> bool:
    return True


def combine(fast: dict[str, tuple[int, pa.Array]], slow: dict[str, list[str | None]], n: int) -> dict[str, pa.Array]:
    """One batch's columns from the rows the C builder took (`fast`) and those Python read (`slow`).

    Ordered as the Python reader alone orders them, by the row of first value: of two spellings
    of one field in a row, the first column's value is the one `events.fold_case` keeps.
    """
    if not slow:
        return {name: array for name, (_, array) in fast.items()}
    # (first row, which reader owns that row, position in that reader's order) per column.
    order: dict[str, tuple[int, int, int]] = {name: (first, 0, j) for j, (name, (first, _)) in enumerate(fast.items())}
    for j, (name, values) in enumerate(slow.items()):
        first = next((i for i, v in enumerate(values[:n]) if v is not None), n)
        if name not in order or first < order[name][0]:
            order[name] = (first, 1, j)
    out: dict[str, pa.Array] = {}
    for name in sorted(order, key=order.__getitem__):
        held = fast.get(name)
        py = slow.get(name)
        if py is None:
            out[name] = fast[name][1]
        elif held is None:
            out[name] = pa.array(py[:n], pa.string())
        else:  # each null where the other holds the row
            out[name] = pc.coalesce(held[1], pa.array(py[:n], pa.string()))
    return out
