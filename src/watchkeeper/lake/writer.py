"""Writing the lake: partition batches by source and day, drop known events, publish atomically.

Batches are buffered per partition and flushed as one Parquet file (zstd, large row groups) when a
partition's buffer is full, when all buffers together are too large (the largest goes first), and
at the end. Each event gets `_event_id` as its batch arrives (however many days the batch spans); at flush time events whose id is already in the partition (or earlier in the same
flush) are dropped, so ingesting the same input twice adds nothing. Only the `_event_id` column
of the one partition being flushed is read for that.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from watchkeeper.errors import LakeError, Where
from watchkeeper.events import RESERVED_COLUMNS, col, native_columns
from watchkeeper.lake import layout
from watchkeeper.lake.layout import Partition

try:
    # CPython's own MD5: the same digests as OpenSSL's, but half the cost on short keys (OpenSSL 3
    # spends about 0.6 µs an event setting up each hash context).
    from _md5 import md5 as _md5
except ImportError:  # an interpreter built without it
    _md5 = hashlib.md5

try:
    # The same digests computed over the column's buffers, no Python object per event (_eventid.c).
    from watchkeeper.lake import _eventid
except ImportError:  # not built (no C compiler at install): hashed in Python, more slowly
    _eventid = None  # type: ignore[assignment]

EVENT_ID = "_event_id"
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 1
#: Min/max statistics only where they prune (time ranges): on every string column they cost
#: about a microsecond an event and rarely skip a row group.
STATISTICS = ["_time", "_record"]
ROW_GROUP_ROWS = 128 * 1024
#: Plain encoding under zstd: measured smaller and faster than dictionary pages on Zeek and
#: syslog data, whose free-text columns overflow the dictionary and are encoded twice.
USE_DICTIONARY = False
#: A partition's buffer is flushed as one file when it holds this many rows or bytes.
FLUSH_ROWS = 256 * 1024
FLUSH_BYTES = 128 * 1024 * 1024
#: All buffers together stay under this; past it the largest buffer is flushed.
MAX_BUFFERED_BYTES = 384 * 1024 * 1024
#: A partition is compacted when it holds this many files smaller than `SMALL_FILE_BYTES`.
COMPACT_MIN_FILES = 8
SMALL_FILE_BYTES = 64 * 1024 * 1024

# Unit separator between the values hashed into an event id; values holding it (or the escape
# character) are escaped first so that no two value sequences give the same key.
_SEP = "\x1f"
_ESC = "\x1b"


@dataclass
class SourceStats:
    """What an ingest did with the events of one source."""

    read: int = 0
    written: int = 0
    duplicates: int = 0
    expired: int = 0


@dataclass
class IngestStats:
    """What an ingest did, per source and to the lake's files."""

    sources: dict[str, SourceStats] = field(default_factory=lambda: defaultdict(SourceStats))
    files_written: int = 0
    files_compacted: int = 0
    partitions_expired: int = 0
    leftovers_removed: int = 0


def _holds_separator(column: pa.ChunkedArray | pa.Array) -> bool:
    # A raw scan of the data buffers (about a nanosecond a row) decides whether the costly
    # escaping is needed; a false positive only costs time, since escaping is deterministic.
    for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
        data = chunk.buffers()[2]
        if data is not None:
            raw = data.to_pybytes()
            if _SEP.encode() in raw or _ESC.encode() in raw:
                return True
    return False


def event_ids(table: pa.Table | pa.RecordBatch, source: str) -> pa.Array:
    """The stable id of every event: MD5 (hex) over the source, the record number and the native values.

    Native values are taken in field-name order, absent ones skipped, so the id of an event does
    not depend on which other fields its batch happened to have. The record number keeps two
    identical lines of one file (the same failed password twice in a second) two events.
    """
    parts: list[Any] = [pa.scalar(source, pa.string()), pc.cast(table.column(col("record")), pa.string())]
    for name in sorted(native_columns(table)):
        values = table.column(name)
        if _holds_separator(values):
            values = pc.replace_substring(pc.replace_substring(values, _ESC, _ESC + _ESC), _SEP, _ESC + "_")
        parts.append(values)
    joined = pc.binary_join_element_wise(*parts, _SEP, null_handling="skip")
    if isinstance(joined, pa.ChunkedArray):
        joined = joined.combine_chunks()
    keys = joined.view(pa.binary())  # the joined text as bytes, without the copy a cast makes
    return md5_hex(keys)


def md5_hex(keys: pa.Array) -> pa.Array:
    """The MD5 digest of each value of a binary column, in hex, as a string column."""
    n = len(keys)
    buffers = keys.buffers()
    if _eventid is None or n == 0:
        # Arrow joins the values; MD5 per key in Python costs less than DuckDB's md5 query over a
        # batch (about 0.7 against 1.0 µs an event, most of DuckDB's being its per-query cost).
        md5 = _md5
        return pa.array([md5(key).hexdigest() for key in keys.to_pylist()], pa.string())
    if keys.null_count:
        raise LakeError("an event id key is null")  # the join skips nulls: never expected
    digests = _eventid.md5_hex(buffers[1], buffers[2] or b"", keys.offset, n, pa.types.is_large_binary(keys.type))
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int64 if 32 * n >= 1 << 31 else np.int32)
    kind = pa.large_string() if offsets.dtype == np.int64 else pa.string()
    return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets), pa.py_buffer(digests)])


def _without_empty_fields(table: pa.Table) -> pa.Table:
    """The table without the native columns it holds no value of.

    A batch has a column for every field of any of its events; a day of it may hold a few events
    of one kind among hundreds of Windows fields. Each column costs a Parquet file ~30 µs however
    empty (15 ms a file, 512 files, on EVTX-ATTACK-SAMPLES with the SigmaHQ regression data):
    left out, the lake's readers read the field as null there (schemas are unified across files).
    """
    n = table.num_rows
    keep = [i for i, (name, column) in enumerate(zip(table.column_names, table.columns, strict=True))
            if column.null_count < n or name in RESERVED_COLUMNS or name == EVENT_ID]
    return table if len(keep) == table.num_columns else table.select(keep)


def _first_occurrences(ids: pa.Array) -> pa.Array | None:
    """A mask keeping the first of repeated ids, or None when all ids are distinct."""
    unique = pc.unique(ids)
    if len(unique) == len(ids):
        return None
    first = pc.index_in(unique, value_set=ids)
    return pc.is_in(pa.array(range(len(ids)), pa.int64()), value_set=pc.cast(first, pa.int64()))


def _cast(arr: pa.Array, kind: pa.DataType, name: str) -> pa.Array:
    if arr.type == kind:
        return arr
    try:
        return pc.cast(arr, kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise LakeError(f"column {name} of type {arr.type} cannot be stored as {kind}: {exc}") from exc


def normalize(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Give a batch the lake's column types: every reserved column typed, natives as plain strings."""
    arrays: list[pa.Array] = []
    names: list[str] = []
    for name, kind in RESERVED_COLUMNS.items():
        if name in batch.schema.names:
            arrays.append(_cast(batch.column(name), kind, name))
        else:
            arrays.append(pa.nulls(batch.num_rows, kind))
        names.append(name)
    for name in native_columns(batch):
        if name == EVENT_ID:
            continue  # recomputed at flush; a source never sets it
        arr = batch.column(name)
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        arrays.append(_cast(arr, pa.string(), name))
        names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _source_of(batch: pa.RecordBatch) -> str:
    if col("source") not in batch.schema.names or batch.num_rows == 0:
        raise LakeError("a batch without `_source` cannot be written to the lake")
    values = batch.column(col("source"))
    low, high = pc.min_max(values).values()
    if low.as_py() is None or low != high:
        raise LakeError("a batch must hold events of exactly one source")
    return layout.check_source_name(str(low.as_py()))


def write_parquet(table: pa.Table, directory: Path) -> Path:
    """Write `table` as a new data file of `directory`, atomically; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / layout.new_part_name()
    temp = layout.temp_path(final)
    try:
        pq.write_table(
            table,
            temp,
            compression=COMPRESSION,
            compression_level=COMPRESSION_LEVEL,
            write_statistics=STATISTICS,
            row_group_size=ROW_GROUP_ROWS,
            use_dictionary=USE_DICTIONARY,
        )
    except (pa.ArrowException, OSError) as exc:
        temp.unlink(missing_ok=True)
        raise LakeError(f"cannot write Parquet: {exc}", Where(file=str(final))) from exc
    layout.publish(temp, final)
    return final


def compact(directory: Path, min_files: int = COMPACT_MIN_FILES) -> int:
    """Merge a partition's small files into one if there are at least `min_files`; return how many merged."""
    small = [p for p in layout.data_files(directory) if p.stat().st_size < SMALL_FILE_BYTES]
    if len(small) < max(min_files, 2):
        return 0
    schema = pa.unify_schemas([pq.read_schema(p) for p in small], promote_options="permissive")
    final = directory / layout.new_part_name()
    temp = layout.temp_path(final)
    pending: list[pa.RecordBatch] = []
    rows = 0
    with pq.ParquetWriter(
        temp,
        schema,
        compression=COMPRESSION,
        compression_level=COMPRESSION_LEVEL,
        write_statistics=STATISTICS,
        use_dictionary=USE_DICTIONARY,
    ) as out:
        # Streams row groups through; memory stays at about one output row group.
        for batch in ds.dataset(small, schema=schema, format="parquet").to_batches(batch_readahead=1):
            pending.append(batch)
            rows += batch.num_rows
            if rows >= ROW_GROUP_ROWS:
                out.write_table(pa.Table.from_batches(pending, schema), row_group_size=ROW_GROUP_ROWS)
                pending, rows = [], 0
        if pending:
            out.write_table(pa.Table.from_batches(pending, schema), row_group_size=ROW_GROUP_ROWS)
    journal = layout.write_journal(directory, final.name, [p.name for p in small])
    layout.publish(temp, final)
    for p in small:
        p.unlink()
    journal.unlink()
    layout.fsync_dir(directory)
    return len(small)


class LakeWriter:
    """Writes batches into the lake; use as a context manager (it holds the writer lock).

    Events older than `retention_days` (by UTC day) are not written and the partitions holding
    them are removed; events without a time go to `day=unknown`, which retention keeps.
    """

    def __init__(
        self,
        root: Path,
        *,
        retention_days: int | None = None,
        compact_min_files: int = COMPACT_MIN_FILES,
        flush_rows: int = FLUSH_ROWS,
        now: datetime | None = None,
    ) -> None:
        self.root = Path(root)
        self.stats = IngestStats()
        self.compact_min_files = compact_min_files
        self.flush_rows = flush_rows
        today = (now or datetime.now(UTC)).astimezone(UTC).date()
        self.cutoff: date | None = (
            today - timedelta(days=retention_days) if retention_days is not None else None
        )
        self._buffers: dict[Partition, list[pa.RecordBatch]] = defaultdict(list)
        self._rows: dict[Partition, int] = defaultdict(int)
        self._bytes: dict[Partition, int] = defaultdict(int)
        self._touched: set[Partition] = set()
        self._stack = ExitStack()

    def __enter__(self) -> LakeWriter:
        self._stack.enter_context(layout.writer_lock(self.root))
        self.stats.leftovers_removed = layout.recover(self.root)
        self._expire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc is None:
                self.close()
        finally:
            # On an error what is still buffered is dropped: nothing half-done is published and
            # ingesting the input again (idempotent) completes the lake.
            self._buffers.clear()
            self._stack.close()

    def _expire(self) -> None:
        if self.cutoff is None:
            return
        for partition, directory in list(layout.partitions(self.root)):
            if partition.day is not None and partition.day < self.cutoff:
                layout.expire(self.root, directory)
                self.stats.partitions_expired += 1

    def write(self, batch: pa.RecordBatch) -> None:
        """Buffer one batch (one source) for its partitions; flush what is full."""
        if batch.num_rows == 0:
            return
        source = _source_of(batch)
        batch = normalize(batch)
        batch = batch.append_column(EVENT_ID, event_ids(batch, source))
        stats = self.stats.sources[source]
        stats.read += batch.num_rows
        days = pc.cast(batch.column(col("time")), pa.date32())
        values = pc.unique(days).to_pylist()
        for value in values:
            if len(values) == 1:
                part = batch
            else:
                mask = pc.is_null(days) if value is None else pc.fill_null(pc.equal(days, value), False)
                part = batch.filter(mask)
            if value is not None and self.cutoff is not None and value < self.cutoff:
                stats.expired += part.num_rows
                continue
            self._add(Partition(source, value), part)

    def _add(self, partition: Partition, batch: pa.RecordBatch) -> None:
        self._buffers[partition].append(batch)
        self._rows[partition] += batch.num_rows
        self._bytes[partition] += batch.nbytes
        if self._rows[partition] >= self.flush_rows or self._bytes[partition] >= FLUSH_BYTES:
            self._flush(partition)
        elif sum(self._bytes.values()) >= MAX_BUFFERED_BYTES:
            self._flush(max(self._bytes, key=self._bytes.__getitem__))

    def _flush(self, partition: Partition) -> None:
        batches = self._buffers.pop(partition, [])
        self._rows.pop(partition, None)
        self._bytes.pop(partition, None)
        if not batches:
            return
        table = pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="default")
        ids = table.column(EVENT_ID).combine_chunks()
        directory = partition.path(self.root)
        keep = _first_occurrences(ids)
        existing = [
            pq.read_table(p, columns=[EVENT_ID]).column(0)
            for p in (layout.data_files(directory) if directory.is_dir() else [])
        ]
        if existing:
            known = pa.chunked_array([c for chunked in existing for c in chunked.chunks], pa.string())
            fresh = pc.invert(pc.is_in(ids, value_set=known.combine_chunks()))
            keep = fresh if keep is None else pc.and_(keep, fresh)
        if keep is not None:
            table = table.filter(keep)
        stats = self.stats.sources[partition.source]
        stats.duplicates += len(ids) - table.num_rows
        if table.num_rows == 0:
            return
        write_parquet(_without_empty_fields(table), directory)
        stats.written += table.num_rows
        self.stats.files_written += 1
        self._touched.add(partition)

    def close(self) -> None:
        """Flush every buffer, then compact the partitions this run wrote to."""
        for partition in list(self._buffers):
            self._flush(partition)
        for partition in sorted(self._touched, key=lambda p: (p.source, p.day_name)):
            self.stats.files_compacted += compact(partition.path(self.root), self.compact_min_files)
        self._touched.clear()
