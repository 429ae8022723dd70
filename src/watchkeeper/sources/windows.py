"""Windows event records: flattening to Sigma field names, core fields, and the columns of a batch.

Both Windows sources (EVTX files and their JSON renderings) go through here, so an event reads the
same whatever file it came in; their Sigma logsources are in `winlogsources`. Field names follow
Zircolite's conventions, because our Sigma results are compared against Zircolite's: System fields
by their own names (`EventID`, `Channel`, `Computer`, ...), attributes folded into the leaf name
(`Provider_Name`, `TimeCreated_SystemTime`, `Security_UserID`, `Execution_ProcessID`), EventData /
UserData fields by their leaf names.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from watchkeeper.events import (
    RAW_COLUMN,
    RAW_INEXACT_COLUMN,
    RESERVED_COLUMNS,
    fold_case,
    repeated,
    to_utc_timestamp,
)
from watchkeeper.sources.base import FieldSelection
from watchkeeper.sources.flatjson import FlatColumns, combine, flat_columns

#: Fields holding `ALGO=value,ALGO=value` lists that Sigma rules also query one algorithm at a time.
_HASH_FIELDS = ("Hashes", "Hash")
_HASH_NAMES = frozenset({"SHA1", "MD5", "SHA256", "IMPHASH", "SHA384", "SHA512"})

# Keyword bits of the Security log's audit result (winmeta.xml: AuditFailure / AuditSuccess).
_AUDIT_FAILURE = 0x0010000000000000
_AUDIT_SUCCESS = 0x0020000000000000
_FAILURE_IDS = frozenset({"4625", "4771", "529", "530", "531", "532", "533", "534", "535", "536"})
_MAX_RECORD = 1 << 63
_SUCCESS_IDS = frozenset({"4624", "4648", "4768", "4769", "528", "540"})


def scalar(value: Any) -> str | None:
    """A JSON value as the string Sigma compares against (None when absent)."""
    t = type(value)
    if t is str:
        return value or None
    if t is int:
        return str(value)
    if value is None:
        return None
    if t is bool:
        return "true" if value else "false"
    if t is float:
        return repr(value)
    if t is list:
        parts = [s for s in (scalar(v) for v in value) if s is not None]
        return "\n".join(parts) if parts else None
    return orjson.dumps(value).decode()


def _put(row: dict[str, Any], name: str, value: Any) -> None:
    text = scalar(value) if type(value) is not str else value
    if text:
        row[name] = text


def _leaves(row: dict[str, Any], node: Mapping[str, Any], parent: str) -> None:
    """EventData / UserData: every leaf under its own name; `#text` under its parent's name."""
    for key, value in node.items():
        if key == "#attributes":
            # Attributes of a data element (xmlns, Name) are markup, not event fields.
            continue
        name = parent if key == "#text" else key
        if type(value) is dict:
            _leaves(row, value, name)
        else:
            _put(row, name, value)
            if " " in name:
                # Defender writes `Threat Name`; rules (and Zircolite) say `ThreatName`.
                _put(row, name.replace(" ", ""), value)


def _system(row: dict[str, Any], system: Mapping[str, Any]) -> None:
    """System: leaf names, attributes folded in as `Element_Attribute`, `EventID` from its `#text`."""
    for key, value in system.items():
        if type(value) is not dict:
            _put(row, key, value)
            continue
        for sub, inner in value.items():
            if sub == "#text":
                _put(row, key, inner)
            elif sub == "#attributes" and type(inner) is dict:
                for attr, text in inner.items():
                    _put(row, f"{key}_{attr}", text)
            else:
                _put(row, sub, inner)


def flatten_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten an evtx_dump-style record (`{"Event": {"System": ..., "EventData": ...}}`)."""
    event = record.get("Event", record)
    row: dict[str, Any] = {}
    if type(event) is not dict:
        return row
    system = event.get("System")
    if type(system) is dict:
        _system(row, system)
    for key, value in event.items():
        if key in ("System", "#attributes"):
            continue
        if type(value) is dict:
            _leaves(row, value, key)
        else:
            _put(row, key, value)
    return row


_TIME_FIELDS = ("TimeCreated_SystemTime", "@timestamp", "TimeCreated", "UtcTime", "EventTime")
_HOST_FIELDS = ("Computer", "Hostname")
_USER_FIELDS = ("User", "TargetUserName", "SubjectUserName", "AccountName")
_SRC_IP_FIELDS = ("SourceIp", "IpAddress", "SourceAddress", "ClientAddress")
_DST_IP_FIELDS = ("DestinationIp", "DestAddress", "DestinationAddress")
_PROCESS_FIELDS = ("Image", "NewProcessName", "ProcessName", "Application")
_COMMAND_FIELDS = ("CommandLine", "ProcessCommandLine")
_FILE_FIELDS = ("TargetFilename", "ImageLoaded", "FileName", "ObjectName")


#: Fields the core columns, `_record` and `_outcome` are made of: read whatever the selection.
CORE_INPUTS = frozenset(
    name.lower()
    for name in (
        *_TIME_FIELDS, *_HOST_FIELDS, *_USER_FIELDS, *_SRC_IP_FIELDS, *_DST_IP_FIELDS, *_PROCESS_FIELDS,
        *_COMMAND_FIELDS, *_FILE_FIELDS, "Keywords", "EventID", "RecordNumber",
    )
)


class _Keep:
    """Whether a field (in the spelling a record gives it) is kept: decided once per spelling.

    `known` is a plain dict, looked up in the hot loop as such (a dict subclass's subscript
    misses the interpreter's specialisation).
    """

    __slots__ = ("fields", "known")

    def __init__(self, fields: frozenset[str] | None) -> None:
        self.fields = fields  # lower-cased; None keeps every field
        self.known: dict[str, bool] = {}

    def __getitem__(self, key: str) -> bool:
        try:
            return self.known[key]
        except KeyError:
            return self.decide(key)

    def decide(self, key: str) -> bool:
        """Whether `key` is kept, remembered (up to a bound)."""
        kept = self.fields is None or key.lower() in self.fields
        if len(self.known) < _MAX_REMEMBERED:
            self.known[key] = kept
        return kept


class _Routes(dict[Any, _Keep]):
    """The `_Keep` of each value of the selection's routing field (Windows: `Channel`)."""

    def __init__(self, selection: FieldSelection) -> None:
        super().__init__()
        self.route = selection.route or ""
        self.selection = selection
        self._by_fields: dict[frozenset[str], _Keep] = {}

    def __missing__(self, value: Any) -> _Keep:
        sel = self.selection
        fields = sel.everything if value is None else sel.by_route.get(value.lower(), sel.default)
        fields = _with_inputs(fields)
        keep = self._by_fields.get(fields)
        if keep is None:
            keep = self._by_fields[fields] = _Keep(fields)
        if len(self) < _MAX_REMEMBERED:
            self[value] = keep
        return keep


def _inexact(value: Any) -> bool:
    """Whether a non-text JSON value's Sigma string is not its JSON text (floats, nested lists, objects).

    A list of texts and numbers is its items' texts joined by newlines, which keyword searches
    with a newline account for; an object's leaves may be anything.
    """
    t = type(value)
    if t is list:
        return any(type(item) not in _VERBATIM for item in value)
    return t is not bool


_VERBATIM = frozenset({str, int, bool, type(None)})
#: Field spellings or routing values remembered at most (a hostile input could name millions).
_MAX_REMEMBERED = 4096
_ALL = _Keep(None)


def _with_inputs(fields: frozenset[str]) -> frozenset[str]:
    """The fields plus what the core columns need, and `Hashes` when one of its digests is read."""
    extra = set(CORE_INPUTS)
    if any(name.upper() in _HASH_NAMES for name in fields):
        extra.update(f.lower() for f in _HASH_FIELDS)
    return fields | extra


def _coalesce(
    cols: Mapping[str, pa.Array], names: tuple[str, ...], dash_is_absent: bool = False
) -> pa.Array | None:
    """The first present value among `names`, row by row (None when no such column exists).

    `cols` is keyed by lower-cased name: a field counts in whatever spelling the data gave it.
    """
    present = [cols[n.lower()] for n in names if n.lower() in cols]
    if dash_is_absent:
        # Windows writes "-" for an empty account or address; it is not a value.
        present = [pc.if_else(pc.equal(a, "-"), pa.scalar(None, pa.string()), a) for a in present]
    if not present:
        return None
    return present[0] if len(present) == 1 else pc.coalesce(*present)


def _utc_time(text: pa.Array) -> pa.Array:
    """Timestamps as UTC: naive Windows times (UtcTime, SystemTime without zone) are UTC already."""
    if pc.all(pc.ends_with(text, "Z")).as_py() is not False:
        return to_utc_timestamp(text)  # the common case (EVTX SystemTime): no regex to compile
    zoned = pc.match_substring_regex(text, r"(?:[Zz]|[+-]\d\d:?\d\d)$")
    text = pc.if_else(zoned, text, pc.binary_join_element_wise(text, pa.scalar("Z"), ""))
    return to_utc_timestamp(text)


def _keyword_bits(text: str) -> int:
    try:
        return int(text, 0) & 0xFFFFFFFFFFFFFFFF
    except ValueError:
        return 0


_OUTCOMES: dict[tuple[str | None, str | None], str | None] = {}


def outcome(keywords: str | None, event_id: str | None) -> str | None:
    """success / failure from the audit keyword bits, else from well-known logon event ids."""
    key = (keywords, event_id)
    found = _OUTCOMES.get(key, "?")
    if found != "?":
        return found
    bits = _keyword_bits(keywords) if keywords is not None else 0
    if bits & _AUDIT_FAILURE or (not bits & _AUDIT_SUCCESS and event_id in _FAILURE_IDS):
        result: str | None = "failure"
    elif bits & _AUDIT_SUCCESS or event_id in _SUCCESS_IDS:
        result = "success"
    else:
        result = None
    if len(_OUTCOMES) < 4096:
        _OUTCOMES[key] = result
    return result


def record_number(text: str | None, otherwise: int) -> int:
    """The record number an `EventRecordID` text gives, or `otherwise` when it gives none that fits."""
    if text is not None and text.isdigit() and len(text) < 19:
        return int(text)
    return otherwise


def split_hashes(row: dict[str, Any]) -> None:
    """Add `SHA1`, `MD5`, ... fields from a `Hashes` list (kept too), unless the row has them."""
    for field in _HASH_FIELDS:
        text = row.get(field)
        if text is None or "=" not in text:
            continue
        for part in text.split(","):
            algo, sep, digest = part.partition("=")
            algo = algo.strip().upper()
            if sep and digest and algo in _HASH_NAMES and algo not in row:
                row[algo] = digest.strip()


class ColumnBuilder:
    """Collects flattened rows column by column and turns them into one batch.

    Arrow's own inference over a list of dicts (`events.batch_from_rows`) runs at ~30k rows/s on
    wide Windows events; filling Python lists per column and converting each once is several times
    faster, and the core columns are then derived with vectorised compute.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Columns start short and grow: many inputs are small files of a few dozen records.
        self.capacity = min(limit, 64)
        self.n = 0
        self.columns: dict[str, list[str | None]] = {}
        self.records: list[int] = []
        #: Which fields `add_flat` keeps (`select`); with a selection, each record's text too.
        self.wanted: _Keep | _Routes = _ALL
        self.raws: _Texts | None = None
        self.inexact: list[int] | None = None  # rows `events.RAW_INEXACT_COLUMN` marks
        self.text_bytes = 1 << 24
        #: Flat JSON lines' columns built in C (`add_line`), beside `columns` for the other rows.
        self.fast: FlatColumns | None = None

    def add(self, row: Mapping[str, str], record: int, raw: bytes = b"") -> None:
        """Append one flattened row (string values, all kept) with its record number and text."""
        i = self.n
        if i == self.capacity:
            self._grow()
        if "Hashes" in row or "Hash" in row:
            row = dict(row)
            split_hashes(row)
        columns = self.columns
        for key, value in row.items():
            column = columns.get(key)
            if column is None:
                column = columns[key] = [None] * self.capacity
            column[i] = value
        self.records.append(record)
        if self.raws is not None:
            self.raws.add(raw)
        self.n = i + 1

    def select(self, selection: FieldSelection | None, text_bytes: int = 1 << 24) -> None:
        """Keep only the fields `selection` asks for (plus the core fields' inputs) and each record's text.

        `text_bytes`: about how many bytes of records' text a batch holds when it is cut.
        """
        self.text_bytes = text_bytes
        wanted = self.wanted = _ALL if selection is None else _Routes(selection)
        self.raws = None if selection is None else _Texts(self.text_bytes)
        self.inexact = None if selection is None else []
        if isinstance(wanted, _Keep):
            self.fast = flat_columns(lambda _, key: wanted[key], None)
        else:
            self.fast = flat_columns(lambda route, key: wanted[route][key], wanted.route)

    def add_line(self, text: bytes, line: int) -> bool:
        """Append one flat JSON object line by the C builder; False (nothing added) when it is Python's to read."""
        fast = self.fast
        if fast is None:
            return False
        i = self.n
        if i == self.capacity:
            self._grow()
        record = fast.add(text, i, line)
        if record < 0:
            return False
        self.records.append(record)
        if self.raws is not None:
            self.raws.add(text)
        self.n = i + 1
        return True

    def add_flat(self, record: Mapping[str, Any], line: int, raw: bytes = b"") -> None:
        """Append one flat NXLog / OTRF object, stringifying its values on the way."""
        i = self.n
        if i == self.capacity:
            self._grow()
        columns = self.columns
        wanted = self.wanted
        if isinstance(wanted, _Keep):
            keep = wanted
        else:
            route = record.get(wanted.route)
            # Not a text (absent, empty, a list, an object): every field any rule reads is kept.
            keep = wanted[route if type(route) is str and route else None]
        known = keep.known
        nested: dict[str, Any] | None = None
        # Plain-dict subscripts with try/except: the interpreter specialises them, and a miss is
        # once per spelling (`known`) or per batch (`columns`).
        for key, value in record.items():
            t = type(value)
            if t is str:
                if not value:
                    continue
            elif t is not int:
                if value is None:
                    continue
                nested = nested if nested is not None else {}
                if t is dict:
                    _leaves(nested, value, key)  # leaves go by their own names: each is kept or not
                elif keep[key]:
                    _put(nested, key, value)
                if self.inexact is not None and _inexact(value):
                    self.inexact.append(i)
                continue
            try:
                if not known[key]:
                    continue
            except KeyError:
                if not keep.decide(key):
                    continue
            if t is int:
                value = str(value)
            try:
                columns[key][i] = value
            except KeyError:
                fresh = columns[key] = [None] * self.capacity
                fresh[i] = value
        if nested:
            for key, value in nested.items():
                if not keep[key]:
                    continue
                column = columns.get(key)
                if column is None:
                    column = columns[key] = [None] * self.capacity
                if column[i] is None:
                    column[i] = value
        if "Hashes" in record or "Hash" in record or (nested and ("Hashes" in nested or "Hash" in nested)):
            # The lists as the row holds them: the record's own, else a nested leaf's.
            hashes: dict[str, Any] = {}
            for field in _HASH_FIELDS:
                held = columns.get(field)
                if held is not None and held[i] is not None:
                    hashes[field] = held[i]
            split_hashes(hashes)
            for key, value in hashes.items():
                if not keep[key]:
                    continue
                column = columns.get(key)
                if column is None:
                    column = columns[key] = [None] * self.capacity
                if column[i] is None:
                    column[i] = value
        number = record.get("RecordNumber")
        # A record number beyond 64 bits is not one Windows wrote: the line numbers the record.
        self.records.append(number if type(number) is int and 0 <= number < _MAX_RECORD else line)
        if self.raws is not None:
            self.raws.add(raw)
        self.n = i + 1

    def _grow(self) -> None:
        extra = min(self.limit, self.capacity * 4) - self.capacity
        if extra <= 0:
            raise ValueError(f"ColumnBuilder holds {self.limit} rows already; build() first")
        for column in self.columns.values():
            column.extend([None] * extra)
        self.capacity += extra

    def build(self, source: str, file: str) -> pa.RecordBatch:
        """The batch of everything added so far (native columns, then the reserved ones); resets."""
        n = self.n
        if self.fast is None:
            built = {name: pa.array(values if n == self.capacity else values[:n], type=pa.string())
                     for name, values in self.columns.items()}
        else:
            built = combine(self.fast.build(n), self.columns, n)
        # Spellings of one field (`ProcessId` / `ProcessID`) become one column, the first's.
        native = fold_case(pa.RecordBatch.from_arrays(list(built.values()), names=list(built)))
        names = native.schema.names
        arrays = list(native.columns)
        lowered = {name.lower(): array for name, array in zip(names, arrays, strict=True)}
        cols = dict(zip(names, arrays, strict=True))
        when = _coalesce(lowered, _TIME_FIELDS)
        core: dict[str, pa.Array] = {
            "_time": _utc_time(when) if when is not None else pa.nulls(n, pa.timestamp("us", tz="UTC")),
            "_source": repeated(source, n),
            "_file": repeated(file, n),
            "_record": pa.array(self.records, pa.int64()),
            "_host": _coalesce(lowered, _HOST_FIELDS),
            "_user": _coalesce(lowered, _USER_FIELDS, dash_is_absent=True),
            "_src_ip": _coalesce(lowered, _SRC_IP_FIELDS, dash_is_absent=True),
            "_dst_ip": _coalesce(lowered, _DST_IP_FIELDS, dash_is_absent=True),
            "_process": _coalesce(lowered, _PROCESS_FIELDS),
            "_command_line": _coalesce(lowered, _COMMAND_FIELDS),
            "_file_path": _coalesce(lowered, _FILE_FIELDS),
            "_outcome": _outcomes(cols.get("Keywords"), cols.get("EventID"), n),
        }
        for name, array in core.items():
            names.append(name)
            arrays.append(array if array is not None else pa.nulls(n, RESERVED_COLUMNS[name]))
        if self.raws is not None:
            names.append(RAW_COLUMN)
            arrays.append(self.raws.array())
        if self.inexact:
            marks = np.zeros(n, dtype=bool)
            marks[self.inexact] = True
            names.append(RAW_INEXACT_COLUMN)
            arrays.append(pa.array(marks))
            self.inexact = []
        # The capacity reached is kept: the next batch of this input is likely as large, and
        # growing again (every column extended, three times over) cost 2% of reading OTRF.
        self.n = 0
        self.columns = {}
        self.records = []
        return pa.RecordBatch.from_arrays(arrays, names=names)


class _Texts:
    """Records' texts gathered into one buffer as they are read, for a binary column.

    Copied in as each record is read, a text's own bytes object is freed at once: a list of them
    joined at the end held every text twice (60 MB more on OTRF), and `pa.array` over the list
    took three times as long (ten times as a string column, checking UTF-8 once more).

    Buffers are recycled: a batch's buffer, once no column refers to it any more, takes the texts
    of a later batch (of any input). Memory touched for the first time costs a page fault per
    4 KiB — about 3.5 µs on the VMs measured, 1.7 µs for a 2 KB record, five times the copy —
    and the allocator hands a freed 16 MiB back to the system at once. Without a free buffer one
    starts at a megabyte and grows fourfold up to the size a batch is cut at (a small file's
    batch does not take megabytes); a batch much smaller than its buffer takes a copy of its own.
    """

    __slots__ = ("data", "ends", "limit", "size", "view")

    #: Buffers of batches handed out, oldest first; at most `_KEPT`, each taken back when free.
    _recycled: ClassVar[list[bytearray]] = []
    _KEPT = 2
    #: Readers in several threads share `_recycled`: a buffer is checked and taken in one step.
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.view = memoryview(self.data)
        self.size = 0
        self.ends: list[int] = [0]

    def add(self, text: bytes) -> None:
        """Append one record's text."""
        start = self.size
        end = self.size = start + len(text)
        if end > len(self.data):
            self._make_room(start, end)
        self.view[start:end] = text
        self.ends.append(end)

    def _make_room(self, start: int, end: int) -> None:
        self.view.release()
        free = None
        if start == 0:
            with self._lock:
                free = _unreferenced(self._recycled)
        if free is not None and len(free) >= end:
            self.data = free
        else:
            grown = max(end, min(max(4 * len(self.data), 1 << 20), self.limit))
            self.data.extend(bytes(grown - len(self.data)))
        self.view = memoryview(self.data)

    def array(self) -> pa.Array:
        """The texts added since the last call as a large_binary column; the buffer is recycled."""
        offsets = np.array(self.ends, dtype=np.int64)
        used = self.view[: self.size]
        data = pa.py_buffer(used if 2 * self.size >= len(self.data) else bytes(used))
        out = pa.Array.from_buffers(pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), data])
        del used
        self.view.release()
        if self.data:
            with self._lock:
                recycled = self._recycled
                recycled.append(self.data)
                del recycled[: -self._KEPT]
        self.data = bytearray()
        self.view = memoryview(self.data)
        self.size = 0
        self.ends = [0]
        return out


def _unreferenced(buffers: list[bytearray]) -> bytearray | None:
    """Take from `buffers` the first one nothing else refers to (no batch's column), if any."""
    for i in range(len(buffers)):
        # References: the list and the argument; a column's view of the buffer adds one.
        if sys.getrefcount(buffers[i]) == 2:
            return buffers.pop(i)
    return None


def _outcomes(keywords: pa.Array | None, event_ids: pa.Array | None, n: int) -> pa.Array:
    """`outcome` of each row, computed once per distinct (Keywords, EventID) pair."""
    if keywords is None and event_ids is None:
        return pa.nulls(n, pa.string())
    k_values, k_codes = _codes(keywords, n)
    e_values, e_codes = _codes(event_ids, n)
    width = len(e_values)
    pairs, inverse = np.unique(k_codes * width + e_codes, return_inverse=True)
    distinct = [outcome(k_values[p // width], e_values[p % width]) for p in pairs.tolist()]
    return pa.array(distinct, pa.string()).take(pa.array(inverse.reshape(-1)))


def _codes(column: pa.Array | None, n: int) -> tuple[list[str | None], np.ndarray]:
    """The distinct values of a column (None last) and each row's index among them."""
    if column is None:
        return [None], np.zeros(n, dtype=np.int64)
    encoded = column.dictionary_encode()
    values: list[str | None] = [*encoded.dictionary.to_pylist(), None]
    codes = encoded.indices.fill_null(len(values) - 1).to_numpy().astype(np.int64)
    return values, codes
