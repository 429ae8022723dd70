"""Text-record plumbing shared by the line-oriented sources, and the user-mapped CSV / JSON-lines source.

The plumbing: `iter_lines` reads a binary stream line by line with a bounded line length (a
longer line is dead-lettered, never loaded), `RowBuffer` turns row dicts into batches of at most
`batch_size` rows column by column (faster than `batch_from_rows` on the hot path, same
semantics), and `parse_time` reads the timestamps text formats carry (epoch seconds, ms or µs,
ISO 8601).

Text is decoded as UTF-8 with replacement characters: a log line with a stray latin-1 byte is
still an event an analyst wants to see, so it is kept (the U+FFFD marks the damage) rather than
dead-lettered.

`MappedSource` is never auto-detected; a user names it and gives a mapping
`{core_or_native_name: column_in_file}` for a CSV file (with a header) or JSON lines.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from itertools import chain
from typing import Any, BinaryIO

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from watchkeeper.events import CORE_FIELDS, RESERVED_COLUMNS, col
from watchkeeper.sources.base import DEFAULT_BATCH_SIZE, Source
from watchkeeper.sources.deadletter import DeadLetter

#: The longest line read into memory; a longer one is dead-lettered and skipped.
MAX_LINE = 1 << 20
_SKIP_CHUNK = 1 << 16
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SOURCE = col("source")
_FILE = col("file")


def iter_lines(
    stream: BinaryIO, origin: str, dead: DeadLetter, max_line: int = MAX_LINE
) -> Iterator[tuple[int, bytes]]:
    """Yield (line number from 1, line without its end) lazily; over-long lines go to the dead letter."""
    readline = stream.readline
    number = 0
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
                rest = readline(_SKIP_CHUNK)
                size += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            dead.add(origin, number, f"line of {size} bytes is longer than the limit of {max_line}", head)
            continue
        yield number, line.rstrip(b"\r\n")


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
    names = [_SOURCE, _FILE]
    arrays: list[pa.Array] = [pa.array([source] * n, pa.string()), pa.array([origin] * n, pa.string())]
    by_lower: dict[str, int] = {}
    for key, arr in zip(keys, batch.columns, strict=True):
        if key in RESERVED_COLUMNS:
            names.append(key)
            arrays.append(arr)
            continue
        if pc.any(pc.equal(arr, "")).as_py():
            arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
        lower = key.lower()
        if lower in by_lower:
            i = by_lower[lower]
            arrays[i] = pc.coalesce(arrays[i], arr)
            continue
        by_lower[lower] = len(names)
        names.append(key)
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def text_of(value: Any) -> str | None:
    """A JSON scalar as the string Sigma compares against; lists joined by commas, objects as JSON."""
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return str(value)
    if kind is list:
        return ",".join(t for t in (text_of(v) for v in value) if t is not None)
    return orjson.dumps(value).decode()


class MappedSource(Source):
    """CSV (with a header) or JSON lines, with a user-supplied mapping onto core and native names.

    `mapping` maps a core field (`time`, `user`, `src_ip`, …) or a native name to the column of
    the file that holds it; unmapped columns are kept as native fields under their own names.
    """

    name = "mapped"

    def __init__(
        self,
        mapping: Mapping[str, str] | None = None,
        fmt: str | None = None,
        label: str = "mapped",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        super().__init__(batch_size)
        if fmt not in (None, "csv", "jsonl"):
            raise ValueError(f"unknown format {fmt!r}: use 'csv' or 'jsonl'")
        self.mapping = dict(mapping or {})
        self.fmt = fmt
        self.label = label

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """Never auto-detected: the user chooses this source and gives its mapping."""
        return 0.0

    def read(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        """Yield batches of the mapped records of a CSV or JSON-lines stream."""
        buffered: Any = stream if hasattr(stream, "peek") else io.BufferedReader(stream)
        fmt = self.fmt or ("jsonl" if buffered.peek(64).lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" else "csv")
        records = self._csv(buffered, origin, dead) if fmt == "csv" else self._jsonl(buffered, origin, dead)
        out = RowBuffer(self.label, origin, self.batch_size)
        for number, record in records:
            row = self._map(record)
            row[col("record")] = number
            batch = out.add(row)
            if batch is not None:
                yield batch
        batch = out.flush()
        if batch is not None:
            yield batch

    def _map(self, record: dict[str, str | None]) -> dict[str, Any]:
        row: dict[str, Any] = {k: v for k, v in record.items() if k and k not in RESERVED_COLUMNS}
        for target, column in self.mapping.items():
            value = record.get(column)
            if target in CORE_FIELDS:
                if target == "time":
                    row[col("time")] = parse_time(value)
                elif target == "bytes":
                    row[col("bytes")] = _int_or_none(value)
                else:
                    row[col(target)] = value or None  # empty counts as absent, as for native fields
            else:
                row[target] = value
        return row

    def _csv(
        self, stream: BinaryIO, origin: str, dead: DeadLetter
    ) -> Iterator[tuple[int, dict[str, str | None]]]:
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
        reader = csv.reader(_bounded(text, origin, dead))
        header: list[str] | None = None
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                dead.add(origin, reader.line_num, f"CSV: {exc}")
                continue
            if header is None:
                header = [h.strip() for h in fields]
                continue
            if not fields:
                continue
            if len(fields) != len(header):
                dead.add(
                    origin,
                    reader.line_num,
                    f"CSV row has {len(fields)} fields, header has {len(header)}",
                    ",".join(fields),
                )
                continue
            yield reader.line_num, dict(zip(header, fields, strict=True))

    def _jsonl(
        self, stream: BinaryIO, origin: str, dead: DeadLetter
    ) -> Iterator[tuple[int, dict[str, str | None]]]:
        for number, line in iter_lines(stream, origin, dead):
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
            yield number, {str(k): text_of(v) for k, v in obj.items()}


def _bounded(text: io.TextIOWrapper, origin: str, dead: DeadLetter) -> Iterator[str]:
    """Lines of a text stream, each at most MAX_LINE characters (longer ones dead-lettered)."""
    number = 0
    while True:
        line = text.readline(MAX_LINE + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE and not line.endswith("\n"):
            while True:
                rest = text.readline(_SKIP_CHUNK)
                if not rest or rest.endswith("\n"):
                    break
            dead.add(origin, number, f"line longer than the limit of {MAX_LINE} characters", line[:4096])
            yield "\n"  # keep csv's line count aligned with the file
            continue
        yield line


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "", "-") else None
    except ValueError:
        return None
