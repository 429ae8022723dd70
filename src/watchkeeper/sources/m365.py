"""Microsoft 365 unified audit log: JSON (lines or array) and the Purview CSV export (`AuditData` JSON).

Records keep the audit schema's names (`Operation`, `Workload`, `ResultStatus`, `ObjectId`…),
nested ones dotted. SigmaHQ's threat_management / threat_detection / exchange rules speak of
`eventSource`, `eventName` and `status`: the logsource mappings point those at `Workload`,
the alert `Name` (or `Operation` for Exchange) and the core outcome.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, ClassVar, cast

import orjson
import pyarrow as pa

from watchkeeper.events import batch_from_rows
from watchkeeper.sources.base import LogSourceMapping
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.jsonflat import BOM, JsonSource, flatten, sniff_json
from watchkeeper.sources.lines import text_lines

_SUCCESS = frozenset({"succeeded", "success", "true", "partiallysucceeded"})
_FAILURE = frozenset({"failed", "failure", "false"})
_ALERT_RENAMES = {"eventSource": "Workload", "eventName": "Name", "status": "_outcome", "Payload": "Data"}


def _client_ip(value: str | None) -> str | None:
    """ClientIP without the port the audit log often appends (`1.2.3.4:5678`, `[::1]:443`)."""
    if not value:
        return None
    if value.startswith("["):
        return value[1 : value.find("]")] or None
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


class M365Audit(JsonSource):
    """Microsoft 365 unified audit log records (Management Activity API, Purview search exports)."""

    name = "m365.audit"
    logsources: ClassVar[tuple[LogSourceMapping, ...]] = (
        LogSourceMapping(product="m365", service="audit"),
        LogSourceMapping(
            product="m365",
            service="exchange",
            conditions={"Workload": ("Exchange",)},
            renames={"eventSource": "Workload", "eventName": "Operation", "status": "_outcome"},
        ),
        LogSourceMapping(
            product="m365",
            service="threat_management",
            conditions={"Workload": ("SecurityComplianceCenter",)},
            renames=_ALERT_RENAMES,
        ),
        LogSourceMapping(
            product="m365",
            service="threat_detection",
            conditions={"Workload": ("SecurityComplianceCenter",)},
            renames=_ALERT_RENAMES,
        ),
    )
    wrappers: ClassVar[tuple[str, ...]] = ("value", "records")

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """UAL JSON (`Workload` + `Operation`) or a Purview CSV whose header names `AuditData`."""
        if sniff_json(
            head, (b'"Workload"', b'"Operation"'), (b'"CreationTime"', b'"RecordType"', b'"OrganizationId"')
        ):
            return 0.95
        header = head.removeprefix(BOM).split(b"\n", 1)[0]
        if b"AuditData" in header and (b"CreationDate" in header or b"RecordType" in header):
            return 0.95
        return 0.0

    def row(self, obj: dict[str, Any]) -> dict[str, Any] | str:
        """Flatten one audit record and fill the core fields."""
        if "Operation" not in obj and "Workload" not in obj:
            return "not a unified audit log record: no Operation or Workload"
        row: dict[str, Any] = flatten(obj)
        status = (row.get("ResultStatus") or "").lower()
        if status in _SUCCESS:
            outcome: str | None = "success"
        elif status in _FAILURE:
            outcome = "failure"
        else:
            # An alert record (SecurityComplianceAlerts) reports a detection that happened; it has
            # no result of its own, and the rules read `status: success` as "the alert was raised".
            outcome = "success" if "AlertId" in row else None
        row["_outcome"] = outcome
        row["_time"] = row.get("CreationTime") or row.get("CreationDate")
        row["_user"] = row.get("UserId") or row.get("UserKey")
        row["_src_ip"] = _client_ip(
            row.get("ClientIP") or row.get("ClientIPAddress") or row.get("ActorIpAddress")
        )
        row["_action"] = row.get("Operation")
        return row

    def read(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        """Yield batches from UAL JSON or a Purview CSV export."""
        head = stream.read(4096)
        stream = cast(BinaryIO, io.BufferedReader(_Prefixed(head, stream)))
        header = head.removeprefix(BOM).lstrip().split(b"\n", 1)[0]
        if b"AuditData" in header and not header.startswith((b"{", b"[")):
            yield from self._csv(stream, origin, dead)
        else:
            yield from super().read(stream, origin, dead)

    def _csv(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        # AuditData cells can exceed the csv module's 128 KiB default.
        csv.field_size_limit(max(csv.field_size_limit(), min(self.max_bytes, sys.maxsize)))
        reader = csv.DictReader(text_lines(stream, origin, dead, self.max_bytes))
        rows: list[Mapping[str, Any]] = []
        line = 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                dead.add(origin, reader.line_num, f"invalid CSV: {exc}")
                continue
            line = reader.line_num
            row = self._csv_row(cells)
            if isinstance(row, str):
                dead.add(origin, line, row, orjson.dumps(cells, default=str))
                continue
            row.update(_source=self.name, _file=origin, _record=line)
            rows.append(row)
            if len(rows) >= self.batch_size:
                yield batch_from_rows(rows)
                rows = []
        if rows:
            yield batch_from_rows(rows)

    def _csv_row(self, cells: dict[str | Any, str | Any]) -> dict[str, Any] | str:
        raw = cells.get("AuditData")
        if not isinstance(raw, str) or not raw.strip():
            return "no AuditData"
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return f"AuditData is not JSON: {exc}"
        if not isinstance(data, dict):
            return f"AuditData is not a JSON object: {type(data).__name__}"
        # The CSV columns repeat what AuditData holds; they fill only what it lacks.
        for key, value in cells.items():
            if isinstance(key, str) and key != "AuditData" and isinstance(value, str) and value:
                data.setdefault({"Operations": "Operation", "UserIds": "UserId"}.get(key, key), value)
        return self.row(data)


class _Prefixed(io.RawIOBase):
    """A stream that first replays bytes already read from another (for streams without peek)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` from the replayed head, then from the rest."""
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
