"""Windows events shipped as JSON by Winlogbeat (ECS): mapped back to the flat Windows field names.

Sigma's Windows rules are written against the event's own fields (`EventID`, `Channel`,
`Image`, `CommandLine`), so `winlog.event_data.*` and `winlog.user_data.*` come out under their
own names and the `winlog` system fields under the names the EVTX XML gives them. The other ECS
fields (`host.name`, `event.action`, `message`…) stay under their dotted names.
"""

from __future__ import annotations

from typing import Any, ClassVar

from watchkeeper.sources.base import LogSourceMapping
from watchkeeper.sources.jsonflat import JsonSource, flatten, sniff_json
from watchkeeper.sources.winlogsources import WINDOWS_LOGSOURCES

#: winlog system fields -> the Windows (EVTX System) field names the rules use.
_SYSTEM = {
    "winlog.event_id": "EventID",
    "winlog.channel": "Channel",
    "winlog.computer_name": "Computer",
    "winlog.provider_name": "Provider_Name",
    "winlog.provider_guid": "Provider_Guid",
    "winlog.record_id": "EventRecordID",
    "winlog.task": "Task",
    "winlog.opcode": "Opcode",
    "winlog.version": "Version",
    "winlog.process.pid": "ProcessID",
    "winlog.process.thread.id": "ThreadID",
    "winlog.user.identifier": "UserID",
    "winlog.keywords": "Keywords",
    # Winlogbeat 6.x kept the same fields at the top level under other names.
    "event_id": "EventID",
    "log_name": "Channel",
    "computer_name": "Computer",
    "source_name": "Provider_Name",
    "record_number": "EventRecordID",
    "task": "Task",
    "opcode": "Opcode",
    "keywords": "Keywords",
    "level": "Level",
}
_DATA_PREFIXES = ("winlog.event_data.", "winlog.user_data.", "event_data.", "user_data.")


class Winlogbeat(JsonSource):
    """Windows event log records as Winlogbeat / Elastic Agent ship them (ECS JSON)."""

    name = "windows.winlogbeat"
    # The same Sigma logsources as the EVTX and JSON Windows sources: the fields are the same.
    logsources: ClassVar[tuple[LogSourceMapping, ...]] = WINDOWS_LOGSOURCES
    wrappers: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """ECS JSON with a `winlog` object holding the channel or event id."""
        if sniff_json(head, (b'"winlog"',), (b'"event_id"', b'"channel"', b'"provider_name"')):
            return 0.95
        # Elasticsearch search hits (`_source`) flattened by an export keep dotted keys.
        if sniff_json(head, (b'"winlog.',)):
            return 0.9
        # Winlogbeat 6.x: no `winlog` object; `log_name`, `event_id` and `event_data` at the top.
        if sniff_json(head, (b'"log_name"',), (b'"event_id"',)) and b'"event_data"' in head:
            return 0.9
        return 0.0

    def row(self, obj: dict[str, Any]) -> dict[str, Any] | str:
        """Map one Winlogbeat document to Windows field names."""
        doc = obj.get("_source", obj) if isinstance(obj.get("_source"), dict) else obj
        flat = flatten(doc)
        row: dict[str, Any] = {}
        # Event data first: batch_from_rows keeps the first spelling of a case-insensitive name.
        for key, value in flat.items():
            if key.startswith(_DATA_PREFIXES):
                row[key.split(".", 2)[-1] if key.startswith("winlog.") else key.split(".", 1)[1]] = value
        for key, name in _SYSTEM.items():
            if key in flat:
                row.setdefault(name, flat[key])
        if "EventID" not in row and "event.code" in flat:
            row["EventID"] = flat["event.code"]
        if "EventID" not in row or "Channel" not in row:
            return "not a Winlogbeat Windows event: no winlog.event_id/event.code or winlog.channel"
        row.setdefault("Computer", flat.get("host.name") or flat.get("host.hostname"))
        for key, value in flat.items():
            if not key.startswith("winlog."):
                row.setdefault(key, value)
        row["_time"] = flat.get("@timestamp")
        row["_host"] = row.get("Computer")
        user = row.get("TargetUserName") or row.get("SubjectUserName") or flat.get("winlog.user.name")
        domain = row.get("TargetDomainName") or row.get("SubjectDomainName") or flat.get("winlog.user.domain")
        row["_user"] = f"{domain}\\{user}" if user and domain else user
        row["_process"] = row.get("Image") or row.get("NewProcessName") or flat.get("process.executable")
        row["_command_line"] = row.get("CommandLine") or flat.get("process.command_line")
        row["_src_ip"] = row.get("IpAddress") or row.get("SourceIp") or flat.get("source.ip")
        row["_dst_ip"] = row.get("DestinationIp") or flat.get("destination.ip")
        row["_action"] = flat.get("event.action")
        outcome = flat.get("event.outcome")
        row["_outcome"] = outcome if outcome in ("success", "failure") else None
        row["_file_path"] = row.get("TargetFilename")
        return row
