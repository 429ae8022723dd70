"""The user-mapped CSV / JSON-lines source: records no other source recognises, named by a mapping.

`MappedSource` is never auto-detected; a user names it and gives a mapping
`{core_or_native_name: column_in_file}` for a CSV file (with a header) or JSON lines. JSON lines
are read in blocks (`jsonblocks`) and mapped column by column; CSV row by row.

Text is decoded as UTF-8 with replacement characters: a log line with a stray latin-1 byte is
still an event an analyst wants to see, so it is kept (the U+FFFD marks the damage) rather than
dead-lettered, and reported (a warning and a dead-letter entry marked kept).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc

from watchkeeper.events import CORE_FIELDS, RESERVED_COLUMNS, col, repeated, text_columns
from watchkeeper.sources.base import DEFAULT_BATCH_SIZE, Source
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.jsonblocks import iter_text_blocks
from watchkeeper.sources.lines import RowBuffer, parse_time, text_lines, times_of


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
        if fmt == "jsonl":
            yield from self._jsonl(buffered, origin, dead)
            return
        out = RowBuffer(self.label, origin, self.batch_size)
        for number, record in self._csv(buffered, origin, dead):
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
        reader = csv.reader(text_lines(stream, origin, dead))
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

    def _jsonl(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        for block in iter_text_blocks(stream, origin, dead):
            table, n = block.table, len(block.records)
            fields: dict[str, pa.Array] = {
                name: column.combine_chunks()
                for name, column in zip(table.column_names, table.columns, strict=True)
                if name and name not in RESERVED_COLUMNS
            }
            for target, column in self.mapping.items():
                value = table.column(column).combine_chunks() if column in table.column_names else None
                if target not in CORE_FIELDS:
                    fields[target] = value if value is not None else pa.nulls(n, pa.string())
                elif value is None:
                    continue
                elif target == "time":
                    fields[col("time")] = times_of(value)
                elif target == "bytes":
                    fields[col("bytes")] = _ints(value)
                else:
                    fields[col(target)] = value
            fields[col("record")] = block.records
            names, arrays = text_columns(list(fields), list(fields.values()))
            head = [repeated(self.label, n), repeated(origin, n)]
            batch = pa.RecordBatch.from_arrays([*head, *arrays], names=[col("source"), col("file"), *names])
            for start in range(0, n, self.batch_size):
                yield batch.slice(start, self.batch_size)


def _ints(values: pa.Array) -> pa.Array:
    """Whole numbers from text; anything else (`-`, `1.5`, words) is absent."""
    try:
        return pc.cast(values, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([_int_or_none(v) for v in values.to_pylist()], pa.int64())


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "", "-") else None
    except ValueError:
        return None
