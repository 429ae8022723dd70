"""Azure activity log: diagnostic-settings records and REST / PowerShell exports.

SigmaHQ's activitylogs rules match `operationName` with upper-case resource operations
(`MICROSOFT.NETWORK/FIREWALLPOLICIES/WRITE`) and the Log Analytics columns `OperationNameValue`,
`CategoryValue`, `ResourceProviderValue`, `ResourceId`. The REST form's `{value, localizedValue}`
objects are reduced to their value so both shapes answer the same names.
"""

from __future__ import annotations

from typing import Any, ClassVar

from watchkeeper.sources.base import LogSourceMapping
from watchkeeper.sources.jsonflat import JsonSource, flatten, sniff_json

_LOCALIZED = ("operationName", "category", "resourceProviderName", "status", "subStatus", "eventName")
_SUCCESS = frozenset({"success", "succeeded"})
_FAILURE = frozenset({"failure", "failed"})


class AzureActivity(JsonSource):
    """Azure Monitor activity log events (control-plane operations on subscriptions)."""

    name = "azure.activitylogs"
    logsources: ClassVar[tuple[LogSourceMapping, ...]] = (
        LogSourceMapping(
            product="azure",
            service="activitylogs",
            renames={
                "OperationNameValue": "operationName",
                "CategoryValue": "category",
                "ResourceProviderValue": "resourceProviderName",
            },
        ),
    )
    wrappers: ClassVar[tuple[str, ...]] = ("records", "value")

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """Activity log JSON: `operationName` and `resourceId` of an ARM resource, not Entra ID."""
        if b"aadiam" in head or b"SignInLogs" in head or b'"AuditLogs"' in head:
            return 0.0
        if sniff_json(
            head,
            (b'"operationName"', b'"resourceId"'),
            (
                b'"callerIpAddress"',
                b'"caller"',
                b'"eventTimestamp"',
                b'"resourceProviderName"',
                b'"correlationId"',
            ),
        ):
            return 0.9
        return 0.0

    def row(self, obj: dict[str, Any]) -> dict[str, Any] | str:
        """Flatten one activity log event and fill the core fields."""
        if "operationName" not in obj:
            return "not an Azure activity log event: no operationName"
        row: dict[str, Any] = flatten(obj)
        for key in _LOCALIZED:
            value = row.get(key + ".value")
            if value is not None:
                row.setdefault(key, value)
        operation = row.get("operationName") or ""
        if "resourceProviderName" not in row and "/" in operation:
            row["resourceProviderName"] = operation.split("/", 1)[0]
        status = (row.get("resultType") or row.get("status") or "").lower()
        row["_time"] = row.get("time") or row.get("eventTimestamp")
        row["_user"] = row.get("caller") or row.get("identity.claims.name")
        row["_src_ip"] = row.get("callerIpAddress") or row.get("httpRequest.clientIpAddress")
        row["_action"] = operation or None
        row["_outcome"] = "success" if status in _SUCCESS else "failure" if status in _FAILURE else None
        return row
