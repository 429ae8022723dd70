"""Google Cloud audit logs: Cloud Logging LogEntry JSON (`gcloud logging read`, sinks, Pub/Sub `data`).

Native fields keep the LogEntry names dotted (`protoPayload.methodName`). SigmaHQ's gcp.audit
rules use the Elastic module's `gcp.audit.method_name` and a `data.`-wrapped form; the
logsource mapping renames both to the LogEntry columns.
"""

from __future__ import annotations

from typing import Any, ClassVar

from watchkeeper.sources.base import LogSourceMapping
from watchkeeper.sources.jsonflat import JsonSource, flatten, sniff_json

_RENAMES = {
    "gcp.audit.method_name": "protoPayload.methodName",
    "data.protoPayload.methodName": "protoPayload.methodName",
    "data.protoPayload.serviceName": "protoPayload.serviceName",
    "data.protoPayload.resource.type": "resource.type",
    "data.protoPayload.logName": "logName",
    "data.protoPayload.authorizationInfo.permission": "protoPayload.authorizationInfo",
    "data.protoPayload.authorizationInfo.granted": "protoPayload.authorizationInfo",
}


class GcpAudit(JsonSource):
    """Google Cloud audit log entries (admin activity, data access, system event, policy)."""

    name = "gcp.audit"
    logsources: ClassVar[tuple[LogSourceMapping, ...]] = (
        LogSourceMapping(product="gcp", service="gcp.audit", renames=_RENAMES),
    )
    wrappers: ClassVar[tuple[str, ...]] = ("entries", "records")

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """LogEntry JSON carrying an AuditLog `protoPayload`."""
        if sniff_json(
            head, (b'"protoPayload"',), (b"google.cloud.audit.AuditLog", b"cloudaudit.googleapis.com")
        ):
            return 0.95
        return 0.0

    def row(self, obj: dict[str, Any]) -> dict[str, Any] | str:
        """Flatten one log entry and fill the core fields."""
        data = obj.get("data")
        entry = data if isinstance(data, dict) and "protoPayload" in data else obj
        if not isinstance(entry.get("protoPayload"), dict):
            return "not a Cloud audit log entry: no protoPayload object"
        row: dict[str, Any] = flatten(entry)
        code = row.get("protoPayload.status.code")
        row["_time"] = row.get("timestamp") or row.get("receiveTimestamp")
        row["_user"] = row.get("protoPayload.authenticationInfo.principalEmail")
        row["_src_ip"] = row.get("protoPayload.requestMetadata.callerIp")
        row["_action"] = row.get("protoPayload.methodName")
        row["_outcome"] = "success" if code in (None, "0") else "failure"
        row["_host"] = row.get("resource.labels.project_id")
        return row
