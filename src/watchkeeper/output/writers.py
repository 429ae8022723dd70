"""Detection writers: JSON lines, a JSON array, CSV — streamed, one detection at a time."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

import orjson

from watchkeeper.errors import ConfigError

CSV_COLUMNS = ("rule_id", "rule_title", "level", "tags", "time", "host", "source", "source_file", "record",
               "event")


class Record(Protocol):
    """Anything with `to_dict()`: detections today, alerts later."""

    def to_dict(self) -> dict[str, Any]: ...


class Writer:
    """Base of the writers; subclasses register by `format` name."""

    format: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Writer]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.format:
            Writer.registry[cls.format] = cls

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.count = 0

    def write(self, record: Record) -> None:
        """Write one record."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish the document (closing brackets) and flush."""
        self.fh.flush()


class JsonLinesWriter(Writer):
    """One JSON object per line."""

    format = "jsonl"

    def write(self, record: Record) -> None:
        """Write one record as a line."""
        self.fh.write(orjson.dumps(record.to_dict(), default=str) + b"\n")
        self.count += 1


class JsonWriter(Writer):
    """A JSON array, written incrementally."""

    format = "json"

    def write(self, record: Record) -> None:
        """Write one array element."""
        self.fh.write((b",\n" if self.count else b"[\n") + orjson.dumps(record.to_dict(), default=str))
        self.count += 1

    def close(self) -> None:
        """Close the array."""
        self.fh.write(b"\n]\n" if self.count else b"[]\n")
        super().close()


class CsvWriter(Writer):
    """CSV with one row per detection; tags joined by `;`, the event as JSON."""

    format = "csv"

    def __init__(self, fh: IO[bytes]) -> None:
        super().__init__(fh)
        self._text = _TextAdapter(fh)
        self._csv = csv.writer(self._text)
        self._csv.writerow(CSV_COLUMNS)

    def write(self, record: Record) -> None:
        """Write one row."""
        d = record.to_dict()
        row = []
        for c in CSV_COLUMNS:
            v = d.get(c)
            if c == "tags":
                v = ";".join(v or [])
            elif isinstance(v, (dict, list)):
                v = orjson.dumps(v, default=str).decode()
            row.append("" if v is None else v)
        self._csv.writerow(row)
        self.count += 1


class _TextAdapter:
    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh

    def write(self, s: str) -> int:
        return self.fh.write(s.encode("utf-8"))


def open_writer(fmt: str, output: Path | None) -> Writer:
    """A writer of `fmt` to `output` (stdout when None)."""
    cls = Writer.registry.get(fmt)
    if cls is None:
        raise ConfigError(f"unknown output format {fmt!r}", hint=f"use one of {', '.join(sorted(Writer.registry))}")
    if output is None:
        return cls(sys.stdout.buffer)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        return cls(output.open("wb"))
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror}") from exc


def close_writer(writer: Writer) -> None:
    """Finish a writer and close its file unless it is stdout."""
    writer.close()
    if writer.fh is not sys.stdout.buffer:
        writer.fh.close()
