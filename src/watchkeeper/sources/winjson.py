"""Windows events as JSON: evtx_dump-style (`{"Event": {"System": ...}}`) and flat NXLog / OTRF lines.

Accepts JSON lines, a sequence of pretty-printed objects, or a JSON array of either. A line or
object that is not valid JSON, or not an object, goes to the dead letter; the rest is read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO, ClassVar

import orjson
import pyarrow as pa

from watchkeeper.sources.base import FieldSelection, LogSourceMapping, Source
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.jsonflat import MAX_DOCUMENT_BYTES
from watchkeeper.sources.lines import SKIP_CHUNK, iter_lines
from watchkeeper.sources.windows import ColumnBuilder, flatten_event, record_number
from watchkeeper.sources.winlogsources import WINDOWS_LOGSOURCES

# Keys that make a flat object a Windows event as NXLog / Winlogbeat-less shippers write it.
_FLAT_ID = "EventID"
_FLAT_CONTEXT = ("Channel", "SourceName", "Hostname", "ProviderGuid")
# JSON structure outside strings: used to cut a stream of pretty-printed objects into objects.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\],]|[^\s{}\[\],"]+|"')
_BOM = b"\xef\xbb\xbf"
#: A batch is cut at this many bytes of JSON even before `batch_size` rows.
BATCH_BYTES = 16 * 1024 * 1024
#: The longest line read (bytes); a longer one is dead-lettered. A whole file's array of events
#: on one line can be long, so this is the limit of a JSON document (`jsonflat`).
MAX_LINE = MAX_DOCUMENT_BYTES
#: In place of a line's value: the C builder took the line as a row (`ColumnBuilder.add_line`).
_ADDED = object()


def _first_object(head: bytes) -> Any:
    """The first JSON value of `head`, whether lines, pretty-printed or an array (None if unknown)."""
    text = head.removeprefix(_BOM).lstrip()
    if text.startswith(b"["):
        text = text[1:].lstrip()
    line = text.split(b"\n", 1)[0]
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    try:
        value, _ = json.JSONDecoder().raw_decode(text.decode("utf-8", "replace"))
    except json.JSONDecodeError:
        return None
    return value


def is_windows_event(obj: Any) -> bool:
    """Whether a decoded JSON value is a Windows event this source reads."""
    if not isinstance(obj, dict):
        return False
    event = obj.get("Event")
    if isinstance(event, dict) and isinstance(event.get("System"), dict):
        return True
    return _FLAT_ID in obj and any(k in obj for k in _FLAT_CONTEXT)


class WindowsJsonSource(Source):
    """Windows events rendered as JSON (evtx_dump, Zircolite, NXLog, OTRF Security-Datasets)."""

    name: ClassVar[str] = "windows.json"
    logsources: ClassVar[tuple[LogSourceMapping, ...]] = WINDOWS_LOGSOURCES
    #: The fields a hunt reads (`select`); None: every field.
    selection: FieldSelection | None = None

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """High when the first object is an `Event.System` record or has NXLog's Windows keys."""
        stripped = head.removeprefix(_BOM).lstrip()
        if not stripped.startswith((b"{", b"[")):
            return 0.0
        first = _first_object(head)
        if first is None:
            # The first object is longer than the head: fall back on its keys appearing early.
            if b'"Event"' in head and b'"System"' in head and b'"EventID"' in head:
                return 0.6
            return 0.0
        if not is_windows_event(first):
            return 0.0
        return 0.95 if "Event" in first else 0.9

    def select(self, selection: FieldSelection) -> None:
        """Flat records keep the selected fields only; nested (`Event.System`) ones keep all."""
        self.selection = selection

    @classmethod
    def expand(cls, raw: Sequence[bytes | str]) -> pa.RecordBatch:
        """Every field of these records, as a read without selection gives them."""
        builder = ColumnBuilder(max(len(raw), 1))
        for number, text in enumerate(raw, 1):
            value = orjson.loads(text)  # the text of a record read before: valid JSON
            if "Event" in value:
                cls._add(builder, value, number)
            else:
                builder.add_flat(value, number)
        return builder.build(cls.name, "")

    def read(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        """Yield batches of events; bad lines or objects go to the dead letter with their line."""
        builder = ColumnBuilder(self.batch_size)
        builder.select(self.selection, text_bytes=BATCH_BYTES + (1 << 16))  # cut past BATCH_BYTES by a record
        size = 0
        for line, value, text in self._values(stream, origin, dead, builder.add_line):
            if value is _ADDED:
                pass
            elif not isinstance(value, dict):
                kind = "an array" if isinstance(value, list) else "a scalar"
                dead.add(origin, line, f"line {line} holds {kind}, not a JSON object")
                continue
            elif "Event" in value:
                self._add(builder, value, line, text)
            else:
                builder.add_flat(value, line, text)  # NXLog / OTRF lines the C builder left
            size += len(text)
            # Rows alone do not bound memory: OTRF events carry kilobytes of rendered `Message`.
            if builder.n >= self.batch_size or size >= BATCH_BYTES:
                yield builder.build(self.name, origin)
                size = 0
        if builder.n:
            yield builder.build(self.name, origin)

    @staticmethod
    def _add(builder: ColumnBuilder, value: Mapping[str, Any], line: int, text: bytes = b"") -> None:
        event = value.get("Event")
        if isinstance(event, dict):
            row = flatten_event(value)
            builder.add(row, record_number(row.get("EventRecordID"), line), text)
        else:
            builder.add_flat(value, line, text)

    def _values(
        self, stream: BinaryIO, origin: str, dead: DeadLetter, add_line: Callable[[bytes, int], bool]
    ) -> Iterator[tuple[int, Any, bytes]]:
        """(line, decoded value, its text) triples: JSON lines fast, anything else split by structure.

        A flat object line `add_line` took (the C builder) comes as `_ADDED` instead of its value.
        """
        number = 0
        readline = stream.readline
        while raw := readline(MAX_LINE + 1):
            number += 1
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                _skip_overlong(raw, number, stream, origin, dead)
                continue
            # JSON allows the whitespace around a value: a line is decoded as read, not copied
            # stripped first (OTRF lines carry kilobytes).
            text = raw.removeprefix(_BOM).lstrip() if number == 1 else raw
            if add_line(text, number):
                yield number, _ADDED, text
                continue
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                text = text.strip()
                if not text:
                    continue
                if not text.startswith((b"{", b"[")) or number > 1:
                    dead.add(origin, number, f"line {number}: invalid JSON: {exc}", text)
                    continue
            else:
                if type(value) is list and value and all(type(item) is dict for item in value):
                    # An array of events on one line: each is a record, with a text of its own.
                    for item in value:
                        yield number, item, orjson.dumps(item)
                else:
                    yield number, value, text
                continue
            # Not one object per line: pretty-printed objects or an array, cut by structure.
            yield from _split(text, number, stream, origin, dead)
            return


def _split(
    first: bytes, number: int, stream: BinaryIO, origin: str, dead: DeadLetter
) -> Iterator[tuple[int, Any, bytes]]:
    """Cut a stream of values (or one array of them) into values, one held in memory at a time."""
    in_array = False
    depth = 0
    start = number
    parts: list[bytes] = []
    collecting = False
    held = 0  # bytes of the value being collected
    too_long = False  # the value being collected is over the limit: skipped to its end

    def emit(chunk: bytes, line: int) -> Iterator[tuple[int, Any, bytes]]:
        try:
            yield line, orjson.loads(chunk), chunk
        except orjson.JSONDecodeError as exc:
            dead.add(origin, line, f"value starting at line {line}: invalid JSON: {exc}", chunk)

    for line_no, raw in _chain_lines(first, number, stream, origin, dead):
        seg = 0
        for match in _TOKENS.finditer(raw):
            token = match.group()
            if not collecting:
                if depth == 0 and token == b"[" and not in_array:
                    in_array = True
                    continue
                if token == b"," or (token == b"]" and in_array):
                    in_array = in_array and token == b","
                    continue
                start, seg = line_no, match.start()
                if token in (b"{", b"["):
                    collecting, depth = True, 1
                    continue
                yield from emit(token, line_no)
                continue
            if token in (b"{", b"["):
                depth += 1
            elif token in (b"}", b"]"):
                depth -= 1
                if depth == 0:
                    if not too_long:
                        parts.append(raw[seg : match.end()])
                        yield from emit(b"\n".join(parts), start)
                    parts, collecting, held, too_long = [], False, 0, False
        if collecting and not too_long:
            parts.append(raw[seg:])
            held += len(raw) - seg
            if held > MAX_LINE:  # memory stays bounded: the rest of the value is skipped, not held
                reason = f"value starting at line {start} is longer than the limit of {MAX_LINE} bytes"
                dead.add(origin, start, reason, parts[0][:4096])
                parts, too_long = [], True
    if collecting and not too_long:
        dead.add(origin, start, f"value starting at line {start} is cut short by the end of the file")


def _chain_lines(
    first: bytes, number: int, stream: BinaryIO, origin: str, dead: DeadLetter
) -> Iterator[tuple[int, bytes]]:
    yield number, first
    yield from iter_lines(stream, origin, dead, MAX_LINE, number + 1)


def _skip_overlong(head: bytes, number: int, stream: BinaryIO, origin: str, dead: DeadLetter) -> None:
    """Dead-letter the over-long line `head` starts, reading the rest of it in bounded chunks."""
    size = len(head)
    while rest := stream.readline(SKIP_CHUNK):
        size += len(rest)
        if rest.endswith(b"\n"):
            size -= 1
            break
    hint = " (a one-line array of events? split it into JSON lines: jq -c '.[]')" if head.lstrip().startswith(b"[") else ""
    dead.add(origin, number, f"line of {size} bytes is longer than the limit of {MAX_LINE}{hint}", head[:4096])
