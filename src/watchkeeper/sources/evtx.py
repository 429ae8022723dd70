"""Windows EVTX files, read with the `evtx` crate (Rust) and flattened like Zircolite does."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from typing import BinaryIO, ClassVar

import evtx
import orjson
import pyarrow as pa

from watchkeeper.events import col
from watchkeeper.sources.base import DEFAULT_BATCH_SIZE, LogSourceMapping, Source
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.inputs import spool
from watchkeeper.sources.windows import ColumnBuilder, flatten_event, record_number
from watchkeeper.sources.winlogsources import WINDOWS_LOGSOURCES

MAGIC = b"ElfFile\x00"
_HEADER_SIZE = 4096
_CHUNK_SIZE = 65536
# The crate's error text names the record it failed on.
_RECORD_NO = re.compile(r"record (?:number )?(\d+)")
# A parser stuck on the same error would never finish; this many in a row ends the file.
_MAX_REPEATS = 1000


def _declared_chunks(head: bytes) -> int | None:
    """The chunk count of an EVTX file header (offset 42, little-endian u16)."""
    if len(head) < 44 or not head.startswith(MAGIC):
        return None
    return int(struct.unpack_from("<H", head, 42)[0])


class EvtxSource(Source):
    """Windows event log files (`.evtx`), every channel."""

    name: ClassVar[str] = "windows.evtx"
    magic: ClassVar[bytes] = MAGIC
    logsources: ClassVar[tuple[LogSourceMapping, ...]] = WINDOWS_LOGSOURCES

    def __init__(self, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(batch_size)
        # Rows not yet built into a batch, possibly of several files, and the file of each.
        self._builder = ColumnBuilder(batch_size)
        self._files: list[str] = []

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """EVTX files start with `ElfFile\\0` whatever their name."""
        return 1.0 if head.startswith(MAGIC) else 0.0

    def read(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        """Yield batches of the file's records; a record the parser rejects goes to the dead letter."""
        yield from self.read_pending(stream, origin, dead)
        yield from self.flush()

    def flush(self) -> Iterator[pa.RecordBatch]:
        """The rows kept back by `read_pending` (of one or more files), as one batch."""
        if self._builder.n:
            yield self._build()

    def read_pending(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        """Yield the full batches of the file's records; the rest waits for the next file or `flush`.

        Most EVTX files hold a few dozen records: building one Arrow batch per file, then merging
        hundreds of them, cost more than parsing them.
        """
        owned = None
        if not stream.seekable():
            # The crate seeks between chunks; archive members are spooled first.
            stream = owned = spool(stream)
        try:
            yield from self._read(stream, origin, dead)
        finally:
            if owned is not None:
                owned.close()

    def _read(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        head = stream.read(_HEADER_SIZE)
        size = stream.seek(0, 2)
        stream.seek(0)
        declared = _declared_chunks(head)
        if declared is not None and size < _HEADER_SIZE + declared * _CHUNK_SIZE:
            present = max(0, size - _HEADER_SIZE) // _CHUNK_SIZE
            dead.add(
                origin,
                None,
                f"truncated EVTX: {size} bytes, header declares {declared} chunks of 64 KiB, "
                f"{present} complete; records of the missing chunks are lost",
            )
        try:
            # One thread: the hunt runs one parser per core, the crate's own pool would oversubscribe.
            parser = evtx.PyEvtxParser(stream, number_of_threads=1)
            records = parser.records_json()
        except (RuntimeError, OSError, ValueError) as exc:
            dead.add(origin, None, f"not a readable EVTX file: {exc}")
            return
        builder = self._builder
        last_error = ""
        repeats = 0
        while True:
            try:
                record = next(records)
            except StopIteration:
                break
            except (RuntimeError, OSError, ValueError) as exc:
                reason = str(exc)
                repeats = repeats + 1 if reason == last_error else 0
                last_error = reason
                if repeats >= _MAX_REPEATS:
                    dead.add(origin, None, f"EVTX parser stuck, stopped reading: {reason}")
                    break
                found = _RECORD_NO.search(reason)
                dead.add(origin, int(found.group(1)) if found else None, f"EVTX record unreadable: {reason}")
                continue
            if not isinstance(record, dict):
                continue
            number = int(record["event_record_id"])
            try:
                row = flatten_event(orjson.loads(record["data"]))
            except orjson.JSONDecodeError as exc:
                dead.add(origin, number, f"EVTX record rendered as invalid JSON: {exc}", record["data"])
                continue
            # The System EventRecordID survives exports that renumber the file's own records.
            text = row.get("EventRecordID")
            builder.add(row, record_number(text, number))
            self._files.append(origin)
            if builder.n >= self.batch_size:
                yield self._build()

    def _build(self) -> pa.RecordBatch:
        """The batch of the rows held, each with the file it came from; empties the builder."""
        files, self._files = self._files, []
        batch = self._builder.build(self.name, files[0])
        if files.count(files[0]) < len(files):
            # Rows of several files: `_file` row by row instead of the builder's single name.
            at = batch.schema.get_field_index(col("file"))
            batch = batch.set_column(at, col("file"), pa.array(files, pa.string()))
        return batch
