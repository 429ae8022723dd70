"""Zeek logs, TSV (the default `#separator`/`#fields` form) and JSON lines, one source per log type.

Field names stay Zeek's own (`id.orig_h`, `query`, `certificate.serial`), as SigmaHQ's zeek rules
use them. Values are strings: TSV unset `-` and empty `(empty)` become absent, sets and vectors are
comma-joined (JSON arrays too, so both forms of the same traffic read alike), booleans `true`/`false`.
Zeek's TSV escapes (`\\x09`) are kept as written.

The log type comes from `#path` (TSV), `_path` (JSON Streaming Logs) or the file name; events of
type `dns` are `zeek.dns`, and so on for `ZEEK_SERVICES`; other types are plain `zeek`. One class
reads them all; `_register` declares the per-type sources, so their Sigma mappings live here too.

TSV is parsed by pyarrow's CSV reader (the `#fields` header as column names, every column a
string), behind `_LineGuard`, which replaces lines longer than `MAX_LINE` with a marker so
memory stays bounded and the rest of the file is still read.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Iterator
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from watchkeeper.events import col, repeated, text_columns
from watchkeeper.sources.base import LogSourceMapping, Source
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.jsonblocks import iter_text_blocks
from watchkeeper.sources.lines import (
    MAX_LINE,
    as_numbers,
    check_utf8,
    check_utf8_lines,
    empty_rows,
    iso_times,
)

#: Zeek log types with a source of their own (`zeek.<type>`), each answering Sigma's product zeek
#: with the same service name. Other log types are read as the generic `zeek` source.
ZEEK_SERVICES = (
    "conn",
    "dns",
    "http",
    "ssl",
    "x509",
    "files",
    "smtp",
    "ssh",
    "rdp",
    "dce_rpc",
    "smb_files",
    "smb_mapping",
    "kerberos",
    "ntlm",
    "ftp",
    "dhcp",
    "snmp",
    "notice",
    "weird",
    "software",
    "pe",
    "sip",
    "radius",
    "tunnel",
    "ocsp",
    "known_services",
    "known_hosts",
    "known_certs",
    "syslog",
    "ntp",
    "modbus",
    "rfb",
    "mysql",
    "irc",
    "dpd",
    "intel",
    "socks",
    "ldap",
    "ldap_search",
    "quic",
)

#: Extra Sigma logsources some log types answer, with the renames of rule fields to Zeek's.
_EXTRA: dict[str, tuple[LogSourceMapping, ...]] = {
    "dns": (LogSourceMapping(category="dns", renames={"answer": "answers", "record_type": "qtype_name"}),),
    "http": (
        LogSourceMapping(
            category="proxy",
            renames={
                "c-uri": "uri",
                "c-useragent": "user_agent",
                "cs-method": "method",
                "cs-host": "host",
                "cs-referrer": "referrer",
                "sc-status": "status_code",
                "c-ip": "id.orig_h",
                "cs-bytes": "request_body_len",
                "sc-bytes": "response_body_len",
                "r-dns": "host",
            },
        ),
    ),
}

#: Per log type, the field that names the account involved (filled into `_user`).
_USER_FIELD = {"ftp": "user", "ntlm": "username", "kerberos": "client", "http": "username", "rdp": "cookie"}

_SOURCE, _FILE, _RECORD, _TIME = col("source"), col("file"), col("record"), col("time")
_SRC, _DST, _BYTES, _USER = col("src_ip"), col("dst_ip"), col("bytes"), col("user")
_CHUNK = 1 << 20
_NAME_TYPE = re.compile(r"([a-z_]+?)(?:[.-]\d.*)?\.(?:log|json|jsonl|ndjson)(?:\.gz)?$")


def source_name(log_type: str | None) -> str:
    """The source of events of one Zeek log type (`dns` -> `zeek.dns`, unknown -> `zeek`)."""
    return f"zeek.{log_type}" if log_type in ZEEK_SERVICES else "zeek"


def log_type_of(filename: str) -> str | None:
    """The Zeek log type a file name suggests (`dns.log`, `conn.09:00:00-10:00:00.log.gz`)."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].rsplit("!", 1)[-1].lower()
    m = _NAME_TYPE.match(base)
    return m.group(1) if m else None


class ZeekSource(Source):
    """Zeek logs of any type, TSV or JSON; events are named per log type (`zeek.dns`, …)."""

    name = "zeek"
    logsources: ClassVar[tuple[LogSourceMapping, ...]] = (LogSourceMapping(product="zeek"),)
    #: The log type this registered source stands for (None: the generic fallback).
    log_type: ClassVar[str | None] = None

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """A `#separator` TSV header, or JSON lines with Zeek's `ts`/`uid`/`id.orig_h` keys."""
        score = 0.0
        if head.startswith(b"#separator "):
            score = 0.95
        else:
            first = head.lstrip(b"\xef\xbb\xbf \t\r\n").split(b"\n", 1)[0]
            if (
                first.startswith(b"{")
                and (b'"ts":' in first or b'"_write_ts":' in first)  # loaded_scripts has no `ts`
                and (b'"id.orig_h":' in first or b'"_path":' in first or b'"uid":"C' in first)
            ):
                score = 0.9
        if score and cls.log_type is not None:
            kind = _head_path(head) or log_type_of(filename)
            score = score + 0.04 if kind == cls.log_type else 0.0
        return score

    def read(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        """Yield batches of a Zeek TSV or JSON log, named after its log type."""
        first = stream.readline(MAX_LINE + 1)
        if first.startswith(b"#"):
            yield from self._tsv(first, stream, origin, dead)
        else:
            yield from self._json(first, stream, origin, dead)

    # --- TSV ---------------------------------------------------------------------------------

    def _tsv(self, first: bytes, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        header: dict[str, str] = {}
        line = first
        number = 0
        while line.startswith(b"#"):
            number += 1
            key, _, value = (
                line.rstrip(b"\r\n")
                .decode("utf-8", "replace")
                .partition(" " if line.startswith(b"#separator") else "\t")
            )
            header[key[1:]] = value
            line = stream.readline(MAX_LINE + 1)
        sep = re.sub(
            r"\\x([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), header.get("separator", "\t")
        )
        if len(sep) != 1 or "fields" not in header:
            dead.add(origin, None, "Zeek TSV without a #fields header or with a separator not one character")
            return
        fields = header["fields"].split(sep)
        types = header.get("types", "").split(sep)
        source = source_name(header.get("path") or log_type_of(origin))
        guard = _LineGuard(line, stream, origin, dead, offset=number)
        skipped: list[int] = []

        def invalid(row: pacsv.InvalidRow) -> str:
            text = row.text or ""
            if not text.startswith("#"):  # `#close` and markers of over-long lines are not data
                where = None if row.number is None else number + row.number
                dead.add(
                    origin,
                    where,
                    f"Zeek TSV row has {row.actual_columns} columns, #fields names {row.expected_columns}",
                    text,
                )
            if row.number is not None:
                skipped.append(row.number)
            return "skip"

        try:
            reader = pacsv.open_csv(
                io.BufferedReader(guard, _CHUNK),
                read_options=pacsv.ReadOptions(
                    column_names=fields, use_threads=False, block_size=2 * MAX_LINE + _CHUNK
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=sep,
                    quote_char=False,
                    escape_char=False,
                    ignore_empty_lines=False,
                    invalid_row_handler=invalid,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(fields, pa.string()),
                    null_values=[header.get("unset_field", "-"), header.get("empty_field", "(empty)"), ""],
                    strings_can_be_null=True,
                ),
            )
        except pa.ArrowInvalid as exc:
            if guard.lines > number:  # an empty body is a valid log with no records
                dead.add(origin, None, f"Zeek TSV body unreadable: {exc}")
            return
        bools = [f for f, t in zip(fields, types, strict=False) if t == "bool"]
        next_row = 1
        for batch in _batches(reader, origin, dead):
            # Physical row numbers of this batch: the next ones, minus the rows the handler
            # skipped. The reader parses ahead, so `skipped` may already hold later rows.
            span = np.arange(next_row, next_row + batch.num_rows + len(skipped), dtype=np.int64)
            if skipped:
                span = span[~np.isin(span, np.asarray(skipped, dtype=np.int64))]
            span = span[: batch.num_rows]
            if len(span):
                next_row = int(span[-1]) + 1
                skipped[:] = [s for s in skipped if s >= next_row]
            records = pa.array(span + number, pa.int64())
            first_col = batch.column(0)
            keep = pc.and_(
                pc.is_valid(first_col), pc.invert(pc.fill_null(pc.starts_with(first_col, "#"), False))
            )
            if not pc.all(keep).as_py():
                batch = batch.filter(keep)
                records = records.filter(keep)
            if batch.num_rows == 0:
                continue
            out = _enrich(_bools(batch, bools), source, origin, records)
            for start in range(0, out.num_rows, self.batch_size):
                yield out.slice(start, self.batch_size)

    # --- JSON --------------------------------------------------------------------------------

    def _json(
        self, first: bytes, stream: BinaryIO, origin: str, dead: DeadLetter
    ) -> Iterator[pa.RecordBatch]:
        default = log_type_of(origin)
        for block in iter_text_blocks(stream, origin, dead, prefix=first):
            table = block.table
            if "_path" not in table.column_names:
                groups: list[tuple[str | None, pa.Table, pa.Array]] = [(default, table, block.records)]
            else:
                # JSON Streaming Logs interleave log types in one file: one batch per type.
                paths = table.column("_path").combine_chunks()
                kinds = pc.unique(paths).to_pylist()
                if len(kinds) == 1:  # a file of one type: no filter, which would copy every column
                    groups = [(kinds[0] or default, table, block.records)]
                else:
                    groups = []
                    for kind in kinds:
                        mask = (
                            pc.is_null(paths) if kind is None else pc.fill_null(pc.equal(paths, kind), False)
                        )
                        groups.append((kind or default, table.filter(mask), block.records.filter(mask)))
            for kind, part, records in groups:
                names: list[str] = []
                arrays: list[pa.Array] = []
                for name, column in zip(part.column_names, part.columns, strict=True):
                    if name == "_write_ts":
                        name = "write_ts"
                    elif name.startswith("_"):
                        continue
                    names.append(name)
                    arrays.append(column.combine_chunks())
                names, arrays = text_columns(names, arrays)
                batch = pa.RecordBatch.from_arrays(arrays, names=names) if names else empty_rows(len(records))
                out = _enrich(batch, source_name(kind), origin, records)
                for start in range(0, out.num_rows, self.batch_size):
                    yield out.slice(start, self.batch_size)


def _batches(reader: pacsv.CSVStreamingReader, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
    """The reader's batches; an error pyarrow raises mid-file ends the file with a dead-letter entry."""
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            dead.add(origin, None, f"Zeek TSV unreadable from here on: {exc}")
            return


_PATH_TSV = re.compile(rb"^#path\t(\S+)", re.MULTILINE)
_PATH_JSON = re.compile(rb'"_path":"([^"]+)"')
#: The TSV header and the first JSON line are well inside this; sniffing runs once per
#: registered log type, so scanning a whole head (up to a MiB) each time would add up.
_PATH_SCAN = 8192


@functools.lru_cache(maxsize=4)  # every registered log type sniffs the same head
def _head_path(head: bytes) -> str | None:
    start = head[:_PATH_SCAN]
    m = _PATH_TSV.search(start) or _PATH_JSON.search(start)
    return m.group(1).decode("utf-8", "replace") if m else None


def _bools(batch: pa.RecordBatch, names: list[str]) -> pa.RecordBatch:
    """TSV spells booleans T/F; use JSON's `true`/`false` so both forms of a log compare alike."""
    if not names:
        return batch
    arrays = list(batch.columns)
    for name in names:
        i = batch.schema.get_field_index(name)
        arr = arrays[i]
        arrays[i] = pc.if_else(pc.equal(arr, "T"), "true", pc.if_else(pc.equal(arr, "F"), "false", arr))
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def _enrich(batch: pa.RecordBatch, source: str, origin: str, records: pa.Array) -> pa.RecordBatch:
    """Add the core and provenance columns to a TSV batch."""
    n = batch.num_rows
    names = batch.schema.names
    arrays: list[pa.Array] = list(batch.columns)
    extra: dict[str, pa.Array] = {
        _SOURCE: repeated(source, n),
        _FILE: repeated(origin, n),
        _RECORD: records,
    }
    if "ts" in names:
        extra[_TIME] = _ts(batch.column("ts"))
    if "id.orig_h" in names:
        extra[_SRC] = batch.column("id.orig_h")
    if "id.resp_h" in names:
        extra[_DST] = batch.column("id.resp_h")
    if "orig_bytes" in names or "resp_bytes" in names:
        parts = [
            pc.cast(batch.column(c), pa.int64(), safe=False)
            for c in ("orig_bytes", "resp_bytes")
            if c in names
        ]
        total = parts[0] if len(parts) == 1 else pc.add(pc.fill_null(parts[0], 0), pc.fill_null(parts[1], 0))
        if len(parts) == 2:
            total = pc.if_else(
                pc.and_(pc.is_null(parts[0]), pc.is_null(parts[1])), pa.scalar(None, pa.int64()), total
            )
        extra[_BYTES] = total
    kind = source.partition(".")[2]
    if _USER_FIELD.get(kind) in names:
        extra[_USER] = batch.column(_USER_FIELD[kind])
    return pa.RecordBatch.from_arrays([*arrays, *extra.values()], names=[*names, *extra])


def _ts(values: pa.Array) -> pa.Array:
    """Zeek `ts` (epoch seconds with a fraction, or ISO 8601 text) as UTC timestamps."""
    seconds = as_numbers(values)
    if seconds is None:
        return iso_times(values)
    micros = pc.cast(pc.round(pc.multiply(seconds, 1_000_000.0)), pa.int64(), safe=False)
    return pc.cast(micros, pa.timestamp("us", tz="UTC"))


class _LineGuard(io.RawIOBase):
    """Complete, valid UTF-8 lines of a stream, each shorter than MAX_LINE; a longer one is
    dead-lettered and replaced by a `#`-marker line (skipped by the reader), so line numbers stay right."""

    def __init__(self, first: bytes, stream: BinaryIO, origin: str, dead: DeadLetter, offset: int) -> None:
        self.stream = stream
        self.origin = origin
        self.dead = dead
        self.lines = offset  # lines handed on so far, counting the header
        self.pending = b""  # the start of a line whose end is not read yet
        self.skipping = 0  # bytes of an over-long line dropped so far (0: not skipping)
        self.head = b""
        self.out = b""
        if first.endswith(b"\n"):  # the first row, read whole with the header
            self.out = self._whole(first)
        else:
            self.pending = first

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.out:
            chunk = self._next()
            if chunk is None:
                return 0
            self.out = chunk
        n = min(len(buffer), len(self.out))
        buffer[:n] = self.out[:n]
        self.out = self.out[n:]
        return n

    def _next(self) -> bytes | None:
        data = self.stream.read(_CHUNK)
        if not data:
            if self.skipping:
                self._overlong()
                return b"#\n"
            if self.pending:
                tail, self.pending = self.pending.rstrip(b"\n"), b""
                self.lines += 1
                check_utf8(tail, self.lines, self.origin, self.dead)
                return tail.decode("utf-8", "replace").encode() + b"\n"
            return None
        out = b""
        if self.skipping:
            nl = data.find(b"\n")
            if nl < 0:
                self.skipping += len(data)
                return b""
            self.skipping += nl
            self._overlong()
            out = b"#\n"
            data = data[nl + 1 :]
        last = data.rfind(b"\n")
        if last < 0:
            self.pending += data
            if len(self.pending) > MAX_LINE:
                self.head, self.skipping, self.pending = self.pending[:4096], len(self.pending), b""
            return out
        first = data.find(b"\n")
        if len(self.pending) + first > MAX_LINE:
            self.head, self.skipping = (self.pending + data[:4096])[:4096], len(self.pending) + first
            self._overlong()
            out += b"#\n"
            body = data[first + 1 : last + 1]
        else:
            body = b"".join((self.pending, memoryview(data)[: last + 1]))  # one copy, not two
        self.pending = data[last + 1 :]
        body = self._whole(body)
        return out + body if out else body

    def _whole(self, body: bytes) -> bytes:
        """Whole lines handed on: counted, and bad UTF-8 replaced by U+FFFD and reported."""
        count = body.count(b"\n")
        self.lines += count
        if body.isascii():  # the usual case, checked far faster than a decode and an encode
            return body
        # Whole lines only, so no character is split: bad UTF-8 becomes U+FFFD (the rows are kept,
        # as in the other text sources, and reported) instead of failing pyarrow's string conversion.
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            check_utf8_lines(body[:-1], self.lines - count + 1, self.origin, self.dead)
            return body.decode("utf-8", "replace").encode()
        return body

    def _overlong(self) -> None:
        self.lines += 1
        self.dead.add(
            self.origin,
            self.lines,
            f"line of {self.skipping} bytes is longer than the limit of {MAX_LINE}",
            self.head,
        )
        self.skipping = 0
        self.head = b""


def _register(log_type: str) -> type[ZeekSource]:
    """Declare the source `zeek.<log_type>` with its Sigma logsources (one class per type)."""
    mappings = (LogSourceMapping(product="zeek", service=log_type), *_EXTRA.get(log_type, ()))
    return type(
        f"Zeek_{log_type}",
        (ZeekSource,),
        {
            "name": source_name(log_type),
            "log_type": log_type,
            "logsources": mappings,
            "__doc__": f"Zeek `{log_type}` logs.",
            "__module__": __name__,
        },
    )


ZEEK_SOURCES: dict[str, type[ZeekSource]] = {t: _register(t) for t in ZEEK_SERVICES}
