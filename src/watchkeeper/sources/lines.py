"""Shared plumbing of the line-oriented sources: bounded lines, times, rows into batches.

syslog, auditd, Zeek, web access and mapped CSV/JSON lines all read lines, turn them into rows
of strings and collect the rows into batches; this module is that common part.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any, BinaryIO

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from watchkeeper.events import RESERVED_COLUMNS, col, repeated, text_columns
from watchkeeper.sources.base import DEFAULT_BATCH_SIZE
from watchkeeper.sources.deadletter import DeadLetter

MAX_LINE = 1 << 20
SKIP_CHUNK = 1 << 16
#: Bytes of whole lines parsed at once by the block readers: large enough to amortise the
#: fixed cost of a vectorised pass, small enough that a block's columns stay a few MiB.
BLOCK_BYTES = 4 << 20
_NEWLINE = 10
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SOURCE = col("source")
_FILE = col("file")


def check_utf8(line: bytes, number: int, origin: str, dead: DeadLetter) -> None:
    """Report `line` (kept, decoded with U+FFFD) when it is not valid UTF-8."""
    if line.isascii():  # the usual case, far cheaper than a decode
        return
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        dead.repair(
            origin,
            number,
            f"line {number} is not valid UTF-8 (byte {exc.start + 1}): kept, with U+FFFD in place of the bad bytes",
            line,
        )


def check_utf8_lines(chunk: bytes, first: int, origin: str, dead: DeadLetter) -> None:
    """`check_utf8` for every line of `chunk` (whole lines, the first numbered `first`)."""
    for number, line in enumerate(chunk.split(b"\n"), first):
        check_utf8(line.rstrip(b"\r"), number, origin, dead)


def iter_lines(
    stream: BinaryIO,
    origin: str,
    dead: DeadLetter,
    max_line: int = MAX_LINE,
    first_line: int = 1,
    keep_ends: bool = False,
) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, line without its end) lazily; over-long lines go to the dead letter.

    `keep_ends`: lines keep their end, and an over-long line is given as an empty one (`csv`
    counts the lines it reads).
    """
    readline = stream.readline
    number = first_line - 1
    while True:
        line = readline(max_line + 1)
        if not line:
            return
        number += 1
        if len(line) > max_line and not line.endswith(b"\n"):
            # Skip the rest of the line in bounded chunks: memory stays flat whatever its length.
            size = len(line)
            head = line[:4096]
            while True:
                rest = readline(SKIP_CHUNK)
                size += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            size -= rest.endswith(b"\n")  # the size of the line, as the other readers count it
            dead.add(origin, number, f"line of {size} bytes is longer than the limit of {max_line}", head)
            if keep_ends:
                yield number, b"\n"
            continue
        yield number, line if keep_ends else line.rstrip(b"\r\n")


def text_lines(stream: BinaryIO, origin: str, dead: DeadLetter, max_line: int = MAX_LINE) -> Iterator[str]:
    """Decoded lines, ends kept, for `csv`: bad UTF-8 kept and reported, over-long lines dead-lettered.

    An over-long line is replaced by an empty one, so the reader's line count stays the file's.
    """
    first = True
    for number, line in iter_lines(stream, origin, dead, max_line, keep_ends=True):
        if first:
            line, first = line.removeprefix(b"\xef\xbb\xbf"), False
        if line.isascii():
            yield line.decode("ascii")
            continue
        check_utf8(line.rstrip(b"\r\n"), number, origin, dead)
        yield line.decode("utf-8", "replace")


def iter_line_blocks(
    stream: BinaryIO,
    origin: str,
    dead: DeadLetter,
    max_line: int = MAX_LINE,
    block_bytes: int = BLOCK_BYTES,
    prefix: bytes = b"",
) -> Iterator[tuple[int, bytes]]:
    """(number of the first line, whole lines each ending in a newline), about `block_bytes` at a time.

    A line with no end within `max_line` bytes is dead-lettered here; shorter over-long lines
    inside a block are left to the caller (`split_block` reports them). `prefix` is the start of
    the stream, already read (a sniffed first line).
    """
    number = 1
    pending = prefix
    while True:
        chunk = stream.read(block_bytes)
        if not chunk:
            break
        cut = chunk.rfind(b"\n") + 1
        if cut == 0:
            data = pending + chunk if pending else chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                if len(data) > max_line:
                    # A line with no end in sight: skip it in bounded reads, memory stays flat.
                    pending = _skip_overlong(stream, data, number, origin, dead, max_line)
                    number += 1
                else:
                    pending = data
                continue
            block, pending = data[:cut], data[cut:]
        else:
            # One copy at most (none for a chunk ending a line): each fresh megabyte costs page
            # faults as well as the copy.
            if pending:
                block = b"".join((pending, memoryview(chunk)[:cut]))
            else:
                block = chunk if cut == len(chunk) else chunk[:cut]
            pending = chunk[cut:]
        yield number, block
        number += block.count(b"\n")
    if pending:
        yield number, pending + b"\n"


def _skip_overlong(
    stream: BinaryIO, data: bytes, number: int, origin: str, dead: DeadLetter, max_line: int
) -> bytes:
    """Dead-letter the over-long line `data` starts; return what follows its end."""
    size, head = len(data), data[:4096]
    while True:
        rest = stream.read(SKIP_CHUNK)
        if not rest:
            tail = b""
            break
        end = rest.find(b"\n")
        if end >= 0:
            size += end
            tail = rest[end + 1 :]
            break
        size += len(rest)
    dead.add(origin, number, f"line of {size} bytes is longer than the limit of {max_line}", head)
    return tail


@dataclass(frozen=True)
class LineBlock:
    """The lines of a block as one Arrow string array, ends stripped, with their line numbers."""

    numbers: np.ndarray
    text: pa.Array
    block: bytes
    spans: np.ndarray  # (start, end) byte offsets in `block` of each line, for dead-letter entries
    #: Some line is not valid UTF-8 (kept with U+FFFD): the caller reports those it keeps (`check_utf8`).
    mended: bool = False

    def raw(self, i: int) -> bytes:
        """The bytes of line `i` as read."""
        start, end = self.spans[i]
        return self.block[start:end]


def split_block(
    block: bytes, first: int, origin: str, dead: DeadLetter, max_line: int = MAX_LINE
) -> LineBlock:
    """The lines of a block from `iter_line_blocks` (ends stripped as `iter_lines` does), without
    copying them one by one; blank lines are dropped and lines over `max_line` bytes dead-lettered.

    Lines that are not valid UTF-8 are not reported here (`LineBlock.mended`): a line the caller
    then cannot parse is dead-lettered, and one report of it is enough.
    """
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == _NEWLINE)
    starts = np.concatenate(([0], ends[:-1] + 1))
    offsets = pa.py_buffer(np.concatenate((starts, ends[-1:] + 1)).astype(np.int32))
    lines = pa.Array.from_buffers(pa.binary(), len(ends), [None, offsets, pa.py_buffer(block)])
    mended = False
    try:
        text = pc.cast(lines, pa.string())
    except pa.ArrowInvalid:  # bad UTF-8: kept with replacement characters
        text = pa.array(block.decode("utf-8", "replace").split("\n")[: len(ends)], pa.string())
        mended = True
    text = pc.utf8_rtrim(text, characters="\r\n")
    numbers = np.arange(first, first + len(ends), dtype=np.int64)
    keep = (ends - starts) <= max_line
    for i in np.flatnonzero(~keep):
        size = int(ends[i] - starts[i])
        raw = block[starts[i] : starts[i] + 4096]
        dead.add(origin, int(numbers[i]), f"line of {size} bytes is longer than the limit of {max_line}", raw)
    keep &= pc.greater(pc.binary_length(text), 0).to_numpy(zero_copy_only=False)
    spans = np.stack((starts, ends), axis=1)
    if keep.all():
        return LineBlock(numbers, text, block, spans, mended)
    return LineBlock(numbers[keep], text.filter(keep), block, spans[keep], mended)


def parse_time(value: object) -> int | None:
    """Microseconds since the epoch (UTC) from epoch seconds/ms/µs or ISO 8601 text; None if unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            return _iso_micros(text)
    if number != number or abs(number) > 1e17:  # NaN or absurd
        return None
    # Pick the unit by magnitude: seconds until year 5138, then ms, then µs.
    if abs(number) < 1e11:
        return round(number * 1_000_000)
    if abs(number) < 1e14:
        return round(number * 1000)
    return round(number)


def _iso_micros(text: str) -> int | None:
    try:
        t = datetime.fromisoformat(text.replace(" ", "T", 1) if "T" not in text else text)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    delta = t - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _surely_not_numbers(values: pa.Array) -> bool:
    """Whether the first value present holds a `:`, so no float cast of the column can succeed."""
    present = pc.drop_null(values.slice(0, 64))
    if len(present) == 0:
        present = pc.drop_null(values)
    first = present[0].as_py() if len(present) else None
    return isinstance(first, str) and ":" in first


def as_numbers(values: pa.Array) -> pa.Array | None:
    """A text column as floats, or None when not every value reads as a number (ISO 8601 times).

    A failing cast costs about 0.8 µs a row in Arrow (it raises only after the whole pass):
    columns whose first value is a time of day skip the attempt.
    """
    if _surely_not_numbers(values):
        return None
    try:
        return pc.cast(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def times_of(values: pa.Array) -> pa.Array:
    """`parse_time` over a column of text: epoch numbers (unit by magnitude) or ISO 8601."""
    numbers = as_numbers(values)
    if numbers is None:
        return iso_times(values)
    magnitude = pc.abs(numbers)
    micros = pc.if_else(
        pc.less(magnitude, 1e11),
        pc.multiply(numbers, 1_000_000.0),
        pc.if_else(pc.less(magnitude, 1e14), pc.multiply(numbers, 1000.0), numbers),
    )
    absurd = pc.or_(pc.greater(magnitude, 1e17), pc.is_nan(numbers))  # as parse_time says
    micros = pc.if_else(absurd, None, micros)
    return pc.cast(pc.cast(pc.round(micros), pa.int64()), pa.timestamp("us", tz="UTC"))


def iso_times(values: pa.Array) -> pa.Array:
    """ISO 8601 texts as UTC timestamps (µs), vectorised where Arrow reads them all, else one by one."""
    try:
        return pc.cast(values, pa.timestamp("us", tz="UTC"))  # all with a zone (`Z`, `+02:00`)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    try:
        return pc.cast(pc.cast(values, pa.timestamp("us")), pa.timestamp("us", tz="UTC"))  # all naive: UTC
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    return pa.array([parse_time(v) for v in values.to_pylist()], pa.timestamp("us", tz="UTC"))


class RowBuffer:
    """Collects row dicts and builds batches column by column.

    Native values must be strings or None; reserved `_` keys keep their core types (`_time` in
    µs since the epoch). Like `batch_from_rows`, empty strings count as absent and native names
    that differ only in case are merged (first spelling wins).
    """

    def __init__(self, source: str, origin: str, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.source = source
        self.origin = origin
        self.batch_size = batch_size
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> pa.RecordBatch | None:
        """Append a row; return a full batch when `batch_size` rows are waiting."""
        self.rows.append(row)
        if len(self.rows) >= self.batch_size:
            return self.flush()
        return None

    def flush(self) -> pa.RecordBatch | None:
        """The waiting rows as one batch (None when there are none)."""
        rows = self.rows
        if not rows:
            return None
        self.rows = []
        return rows_to_batch(rows, self.source, self.origin)


def rows_to_batch(rows: list[dict[str, Any]], source: str, origin: str) -> pa.RecordBatch:
    """One batch from rows, with `_source` and `_file` set for all of them."""
    n = len(rows)
    # The union of the keys in first-seen order, collected in C (rows are sparse: a sudo line
    # has fields an sshd line has not); pyarrow then converts row-wise against that schema.
    keys = [k for k in dict.fromkeys(chain.from_iterable(rows)) if k not in (_SOURCE, _FILE)]
    schema = pa.schema([(k, RESERVED_COLUMNS.get(k, pa.string())) for k in keys])
    batch = pa.RecordBatch.from_pylist(rows, schema=schema)
    names, arrays = text_columns(keys, batch.columns)
    source_file = [repeated(source, n), repeated(origin, n)]
    return pa.RecordBatch.from_arrays([*source_file, *arrays], names=[_SOURCE, _FILE, *names])


def empty_rows(n: int) -> pa.RecordBatch:
    """A batch of `n` rows and no columns (rows of `{}` are rows all the same)."""
    return pa.RecordBatch.from_arrays([pa.nulls(n)], names=["_"]).drop_columns(["_"])


def number_text(value: float) -> str:
    """A JSON number as text; whole numbers without a fraction, as JSON does not tell 1 from 1.0
    (and a reader that infers one type per column cannot either)."""
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def text_of(value: Any) -> str | None:
    """A JSON scalar as the string Sigma compares against; lists joined by commas, objects as JSON."""
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return number_text(value)
    if kind is list:
        return ",".join(t for t in (text_of(v) for v in value) if t is not None)
    return orjson.dumps(value).decode()


def iter_json_objects(
    stream: BinaryIO, origin: str, dead: DeadLetter, first_line: int = 1, max_line: int = MAX_LINE
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each JSON line; invalid JSON and non-objects go to the dead letter."""
    for number, line in iter_lines(stream, origin, dead, max_line, first_line):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            dead.add(origin, number, f"invalid JSON: {exc}", line)
            continue
        if not isinstance(obj, dict):
            dead.add(origin, number, f"JSON line is a {type(obj).__name__}, not an object", line)
            continue
        yield number, obj
