"""JSON lines in blocks: a few MiB of lines into text columns at once, by C or by pyarrow.

The rows are the ones the line-by-line path gives (`lines.iter_json_objects`, values rendered by
`lines.text_of`): every value is text — strings as written, numbers as `number_text` prints them,
booleans `true`/`false`, lists comma-joined — and each row keeps its line number. pyarrow cannot
read every block that way: a field that changes type, a line that is not a JSON object, a blank
line, a nested object or an over-long line. Such a block is read line by line instead, so its bad
lines are dead-lettered one by one with their numbers and the rows are the same.

Where the C builder is built (`flatjson`), it reads blocks instead of pyarrow: about three times
faster, rendering each value as `text_of` does with no type inference to undo; a block holding a
line it declines is read line by line.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.flatjson import FlatColumns, text_columns
from watchkeeper.sources.lines import (
    BLOCK_BYTES,
    MAX_LINE,
    empty_rows,
    iter_json_objects,
    iter_line_blocks,
    number_text,
    text_of,
)

_NEWLINE = 10
#: From here on not every integer is a float: pyarrow reading `[9007199254740993, 0.5]` as floats
#: would print 9007199254740992.
_EXACT_FLOATS = 2.0**53


@dataclass(frozen=True)
class TextBlock:
    """Rows of consecutive JSON lines: one text column per key (first-seen order) and line numbers."""

    table: pa.Table  # may have no columns (lines of `{}`): its rows are `len(records)`
    records: pa.Array


def iter_text_blocks(
    stream: BinaryIO,
    origin: str,
    dead: DeadLetter,
    max_line: int = MAX_LINE,
    block_bytes: int = BLOCK_BYTES,
    prefix: bytes = b"",
) -> Iterator[TextBlock]:
    """The JSON objects of a JSON-lines stream (after `prefix`, its start already read) as blocks of
    text columns; bad lines go to the dead letter."""
    # Keys seen holding text are read as text from then on: otherwise pyarrow would turn a
    # date-like string into a timestamp, whose text is no longer the one written.
    hints: dict[str, pa.DataType] = {}
    fast = text_columns()
    for first, block in iter_line_blocks(stream, origin, dead, max_line, block_bytes, prefix):
        table = _columnar(block, hints, max_line) if fast is None else _built(block, fast, max_line)
        if table is None:
            fallback = _by_line(block, first, origin, dead, max_line)
            if fallback is not None:
                yield fallback
        elif table.num_rows:
            records = pa.array(np.arange(first, first + table.num_rows, dtype=np.int64))
            yield TextBlock(table, records)


def _columnar(block: bytes, hints: dict[str, pa.DataType], max_line: int) -> pa.Table | None:
    """The block as text columns, or None when only the line-by-line path reads it right."""
    lines = block.count(b"\n")
    if lines == 0 or block.startswith(b"\n") or b"\n\n" in block or _has_long_line(block, max_line):
        return None  # over-long or blank lines: the line path reports and skips them
    if not block.isascii() and not _is_utf8(block):
        return None  # pyarrow's reader takes bytes that are not UTF-8 as they stand: not JSON
    while True:
        try:
            table = pj.read_json(
                pa.BufferReader(block),  # zero-copy; a Python file object is copied from
                read_options=pj.ReadOptions(use_threads=False, block_size=len(block) + 1),
                parse_options=pj.ParseOptions(
                    explicit_schema=pa.schema(list(hints.items())) if hints else None,
                    unexpected_field_behavior="infer",
                    newlines_in_values=False,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        if table.num_rows != lines:
            return None
        retry = [f.name for f in table.schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
        if not retry:
            break
        hints.update(dict.fromkeys(retry, pa.string()))
    names: list[str] = []
    arrays: list[pa.Array] = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if column.null_count == len(column):
            continue  # a hinted key absent from this block, or only nulls: absent, as per line
        try:
            arr = column.combine_chunks()
            text = _text(arr)
        except pa.ArrowException:  # e.g. lists of nulls trip pyarrow; the line path reads them
            return None
        if text is None:
            return None
        if pa.types.is_string(arr.type):
            hints[name] = pa.string()
        names.append(name)
        arrays.append(text)
    # Rows without a single value (`{}` lines) are rows all the same: the line path keeps them.
    return pa.Table.from_arrays(arrays, names=names) if names else None


def _built(block: bytes, fast: FlatColumns, max_line: int) -> pa.Table | None:
    """The block as text columns by the C builder, or None when a line of it is the line path's."""
    if not block.endswith(b"\n") or _has_long_line(block, max_line):
        return None  # over-long lines: the line path reports and skips them
    taken, whole = fast.add_lines(block, 0)
    built = fast.build(taken)
    if not whole or not built:
        return None  # a line C declined (invalid, nested, blank), or rows without a value (`{}`)
    return pa.Table.from_arrays([array for _, array in built.values()], names=list(built))


def _is_utf8(block: bytes) -> bool:
    """Whether `block` is valid UTF-8 (checked by Arrow in place, no decoded copy)."""
    offsets = pa.py_buffer(np.array([0, len(block)], dtype=np.int64))
    text = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(block)])
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _has_long_line(block: bytes, max_line: int) -> bool:
    """Whether a line of `block` (each ends in a newline) may be longer than `max_line` bytes.

    Every stretch of `max_line // 2` bytes holding a newline bounds each line below `max_line`:
    a few searches instead of an array of every newline's position.
    """
    step = max(max_line // 2, 1)
    for start in range(0, len(block), step):
        if block.find(b"\n", start, start + step) < 0:
            return _longest_line(block) > max_line
    return False


def _longest_line(block: bytes) -> int:
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == _NEWLINE)
    return int((np.diff(ends, prepend=-1) - 1).max())


def _text(arr: pa.Array) -> pa.Array | None:
    """Values as `text_of` renders them, or None for a type only the line path renders right."""
    kind = arr.type
    if pa.types.is_string(kind):
        return arr
    if pa.types.is_large_string(kind):
        return pc.cast(arr, pa.string())
    if pa.types.is_null(kind):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_boolean(kind):
        return pc.if_else(arr, "true", "false")
    if pa.types.is_integer(kind):
        return pc.cast(arr, pa.string())
    if pa.types.is_floating(kind):
        if (pc.max(pc.abs(arr)).as_py() or 0) >= _EXACT_FLOATS:
            return None  # maybe integers pyarrow made floats (beside a float): the line path keeps them
        return _float_text(arr)
    if pa.types.is_list(kind):
        values = _text(arr.values)
        if values is None or values.null_count:
            return None  # text_of skips null items; binary_join would null the whole list
        listed = pa.ListArray.from_arrays(arr.offsets, values, mask=arr.is_null())
        return pc.binary_join(listed, ",")
    return None


def _float_text(arr: pa.Array) -> pa.Array:
    """Floats as `number_text` prints them; Arrow's own text agrees except around exponents and zero."""
    text = pc.cast(arr, pa.string())
    magnitude = pc.abs(arr)
    # Where Python switches to exponent notation (below 1e-4, from 1e16), where Arrow does (its
    # own thresholds) and for -0.0, Python prints the value: such numbers are rare in logs.
    odd = pc.or_(
        pc.or_(pc.less(magnitude, 1e-4), pc.greater_equal(magnitude, 1e16)),
        pc.match_substring(text, "e"),
    )
    if not pc.any(odd).as_py():
        return text
    where = np.flatnonzero(pc.fill_null(odd, False).to_numpy(zero_copy_only=False))
    values: list[Any] = text.to_pylist()
    floats = arr.to_pylist()
    for i in where.tolist():
        values[i] = number_text(floats[i])
    return pa.array(values, pa.string())


def _by_line(block: bytes, first: int, origin: str, dead: DeadLetter, max_line: int) -> TextBlock | None:
    """The block read one line at a time: exact rows, bad lines dead-lettered with their numbers."""
    rows: list[dict[str, str | None]] = []
    records: list[int] = []
    for number, obj in iter_json_objects(io.BytesIO(block), origin, dead, first, max_line):
        rows.append({key: text_of(value) for key, value in obj.items()})
        records.append(number)
    if not rows:
        return None
    keys = list(dict.fromkeys(key for row in rows for key in row))
    if not keys:
        return TextBlock(pa.Table.from_batches([empty_rows(len(rows))]), pa.array(records, pa.int64()))
    table = pa.Table.from_pylist(rows, schema=pa.schema([(k, pa.string()) for k in keys]))
    # Keys that are null in every row are absent, as in the columnar path.
    keep = [k for k, c in zip(keys, table.columns, strict=True) if c.null_count < len(c)]
    return TextBlock(table.select(keep), pa.array(records, pa.int64()))
