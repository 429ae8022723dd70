"""Nested JSON to flat string fields, and a bounded reader of JSON records, shared by the JSON sources.

Sigma rules for cloud logs name nested fields with dots (`userIdentity.arn`,
`requestParameters.userData`), so a nested record becomes one string column per leaf. Lists
become JSON text (rules match them with `contains`), booleans `true`/`false` as JSON spells
them, and anything deeper than `max_depth` stays JSON text so a hostile record cannot create
unbounded columns.

The reader accepts the three shapes JSON exports come in: JSON lines, one array, and one
wrapper object holding the array (`{"Records": [...]}`, `{"value": [...]}`, `{"records": [...]}`),
pretty-printed or not. A whole document is read only up to a limit; a larger one is
dead-lettered instead of loaded.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from typing import Any, BinaryIO, ClassVar

import orjson
import pyarrow as pa

from watchkeeper.events import batch_from_rows
from watchkeeper.sources.base import Source
from watchkeeper.sources.deadletter import DeadLetter

#: Nesting levels flattened into dotted keys; deeper objects are kept as JSON text.
MAX_DEPTH = 8
#: The largest line or whole document loaded into memory (bytes); larger ones are dead-lettered.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
_CHUNK = 1 << 20
BOM = b"\xef\xbb\xbf"


def dumps(value: Any) -> str:
    """JSON text of a value, compact."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # orjson refuses integers beyond 64 bits, which Python's json parser can produce.
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def scalar(value: Any) -> str | None:
    """One JSON value as the string Sigma compares against (None stays absent)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return str(value)
    return dumps(value)


def flatten(
    obj: Mapping[str, Any],
    max_depth: int = MAX_DEPTH,
    keep_json: Collection[str] = (),
    prefix: str = "",
) -> dict[str, str]:
    """Flatten a JSON object into dotted keys with string values (nulls and empty objects dropped).

    Paths named in `keep_json` are also kept whole as JSON text under their own name, for rules
    that match a whole object (`requestParameters|contains: ...`).
    """
    out: dict[str, str] = {}
    _flatten_into(out, obj, prefix, max_depth, keep_json)
    return out


def _flatten_into(
    out: dict[str, str], obj: Mapping[str, Any], prefix: str, depth: int, keep_json: Collection[str]
) -> None:
    for key, value in obj.items():
        name = prefix + key if prefix else key
        # Dispatch on exact types first: this loop runs once per leaf of every event.
        kind = type(value)
        if kind is str:
            out[name] = value
        elif kind is dict:
            if keep_json and name in keep_json and value:
                out[name] = dumps(value)
            if depth <= 1:
                if value:
                    out[name] = dumps(value)
            else:
                _flatten_into(out, value, name + ".", depth - 1, keep_json)
        elif value is None:
            continue
        elif kind is list:
            out[name] = dumps(value)
        else:
            text = scalar(value)
            if text is not None:
                out[name] = text


def _lines(stream: BinaryIO, limit: int) -> Iterator[tuple[bytes, bool]]:
    """Lines of a stream without their newline, each flagged True when it exceeded `limit` bytes."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            # Too long: skip to the end of this line without holding it.
            while True:
                rest = stream.readline(_CHUNK)
                if not rest or rest.endswith(b"\n"):
                    break
            yield line[:256], True
            continue
        yield line.rstrip(b"\r\n"), False


class JsonRecords:
    """Iterates the JSON objects of a stream as `(record number, object)`; bad ones go to the dead letter.

    The record number is the line for JSON lines and the 1-based position in the array for a
    document holding an array.
    """

    def __init__(
        self,
        wrappers: tuple[str, ...] = ("Records", "records", "value"),
        max_bytes: int = MAX_DOCUMENT_BYTES,
    ) -> None:
        self.wrappers = wrappers
        self.max_bytes = max_bytes

    def read(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield every JSON object of `stream`, dead-lettering what is not one."""
        lines = _lines(stream, self.max_bytes)
        lineno = 0
        for raw, too_long in lines:
            lineno += 1
            if lineno == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            text = raw.strip()
            if not text:
                continue
            if too_long:
                dead.add(origin, lineno, f"line longer than {self.max_bytes} bytes", raw)
                continue
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                # The first content line is not JSON on its own: a pretty-printed document, or a
                # JSON-lines file whose first line is broken (`_document` tells them apart).
                yield from self._document(raw, lineno, stream, origin, dead)
                return
            yield from self._values(value, lineno, origin, dead, raw, whole=True)
            break
        for raw, too_long in lines:
            lineno += 1
            if too_long:
                dead.add(origin, lineno, f"line longer than {self.max_bytes} bytes", raw)
                continue
            if not raw.strip():
                continue
            yield from self._line(raw, lineno, origin, dead)

    def _line(
        self, raw: bytes, lineno: int, origin: str, dead: DeadLetter
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            dead.add(origin, lineno, f"invalid JSON: {exc}", raw)
            return
        yield from self._values(value, lineno, origin, dead, raw)

    def _values(
        self, value: Any, lineno: int, origin: str, dead: DeadLetter, raw: bytes, whole: bool = False
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """The objects one parsed line or document holds: itself, or the items of its array.

        A bare array is a document only when it starts the file (`whole`); among JSON lines it is
        one bad record, not several.
        """
        if isinstance(value, dict):
            items = self._unwrap(value)
            if items is None:
                yield lineno, value
                return
        elif isinstance(value, list) and whole:
            items = value
        else:
            dead.add(origin, lineno, f"expected a JSON object, got {type(value).__name__}", raw)
            return
        for i, item in enumerate(items, 1):
            if isinstance(item, dict):
                yield i, item
            else:
                dead.add(origin, i, f"array item is not a JSON object: {type(item).__name__}", scalar(item))

    def _unwrap(self, value: dict[str, Any]) -> list[Any] | None:
        for key in self.wrappers:
            items = value.get(key)
            if isinstance(items, list):
                return items
        return None

    def _document(
        self, first: bytes, first_line: int, stream: BinaryIO, origin: str, dead: DeadLetter
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        budget = self.max_bytes - len(first)
        rest = stream.read(budget + 1) if budget >= 0 else b""
        body = first + b"\n" + rest
        whole = len(rest) <= budget
        error = f"larger than {self.max_bytes} bytes"
        if whole:
            try:
                value = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                error = f"invalid JSON: {exc}"
            else:
                yield from self._values(value, first_line, origin, dead, body[:256], whole=True)
                return
        # Not one document: if some lines are JSON objects on their own, it is JSON lines with
        # broken lines, which are dead-lettered one by one; otherwise the file is.
        lines = body.split(b"\n")
        if not whole:
            # The last buffered line was cut by the limit: finish it from the stream.
            lines[-1] += stream.readline(self.max_bytes).rstrip(b"\r\n")
        parsed: list[tuple[int, Any, bytes]] = []
        for offset, raw in enumerate(lines):
            text = raw.strip()
            if not text:
                continue
            try:
                parsed.append((first_line + offset, orjson.loads(text), raw))
            except orjson.JSONDecodeError as exc:
                parsed.append((first_line + offset, exc, raw))
        if not any(isinstance(v, dict) and v for _, v, _ in parsed):
            dead.add(origin, None, f"not a JSON document or JSON lines: {error}", body[:4096])
            return
        for lineno, value, raw in parsed:
            if isinstance(value, orjson.JSONDecodeError):
                dead.add(origin, lineno, f"invalid JSON: {value}", raw)
            else:
                yield from self._values(value, lineno, origin, dead, raw)
        lineno = first_line + len(lines) - 1
        for raw, too_long in _lines(stream, self.max_bytes):
            lineno += 1
            if too_long:
                dead.add(origin, lineno, f"line longer than {self.max_bytes} bytes", raw)
            elif raw.strip():
                yield from self._line(raw, lineno, origin, dead)


class JsonSource(Source):
    """Base of the JSON sources: reads records with `JsonRecords`, turns each into a row with `row`.

    Not registered itself (no `name`); a subclass sets `name`, `wrappers` and implements `row`.
    """

    wrappers: ClassVar[tuple[str, ...]] = ("Records", "records", "value")
    #: The largest line or document loaded into memory; larger ones are dead-lettered.
    max_bytes: ClassVar[int] = MAX_DOCUMENT_BYTES

    def row(self, obj: dict[str, Any]) -> dict[str, Any] | str:
        """The batch row of one record, or the reason it cannot be read."""
        raise NotImplementedError

    def read(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        """Yield batches of the JSON records in `stream`."""
        rows: list[Mapping[str, Any]] = []
        cells = 0
        records = JsonRecords(self.wrappers, self.max_bytes)
        source = self.name
        for number, obj in records.read(stream, origin, dead):
            row = self.row(obj)
            if isinstance(row, str):
                dead.add(origin, number, row, orjson.dumps(obj))
                continue
            row.setdefault("_source", source)
            row["_file"] = origin
            row["_record"] = number
            rows.append(row)
            cells += sum(len(v) for v in row.values() if type(v) is str)
            # Records of kilobytes (ECS documents with a rendered `message`) are cut by size too,
            # so memory stays bounded whatever the records look like.
            if len(rows) >= self.batch_size or cells >= MAX_BATCH_CHARS:
                yield batch_from_rows(rows)
                rows = []
                cells = 0
        if rows:
            yield batch_from_rows(rows)


#: A batch is cut at this many characters of field values even before `batch_size` rows.
MAX_BATCH_CHARS = 8 * 1024 * 1024


def sniff_json(head: bytes, required: Collection[bytes], any_of: Collection[bytes] = ()) -> bool:
    """Whether `head` looks like JSON and holds every `required` marker and one of `any_of`."""
    text = head.lstrip(BOM + b" \t\r\n")
    if not text.startswith((b"{", b"[")):
        return False
    if not all(marker in head for marker in required):
        return False
    return not any_of or any(marker in head for marker in any_of)
