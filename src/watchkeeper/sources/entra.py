"""Entra ID (Azure AD) sign-in and audit logs: Graph API objects and diagnostic-settings records.

Two shapes reach us. Graph exports (`{"value": [...]}`, arrays or lines) hold the signIn /
directoryAudit object itself; diagnostic settings (Event Hub, storage, Log Analytics) wrap it in
`properties` beside `category`, `resultType`, `callerIpAddress`. SigmaHQ's rules mix the
names of both (`ResultType`, `Status.errorCode`, `properties.message`, `DeviceDetail.trusttype`),
so a diagnostic record keeps `properties.*` and also gets its properties at the top level, and
a Graph sign-in gets `ResultType` / `ResultDescription` from its `status`. Field names are
compared case-insensitively downstream, as `batch_from_rows` merges them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from watchkeeper.sources.base import LogSourceMapping
from watchkeeper.sources.jsonflat import JsonSource, flatten, sniff_json

SIGNIN = "azure.signinlogs"
AUDIT = "azure.auditlogs"
_SIGNIN_CATEGORIES = frozenset(
    {
        "signinlogs",
        "noninteractiveusersigninlogs",
        "serviceprincipalsigninlogs",
        "managedidentitysigninlogs",
    }
)


class EntraId(JsonSource):
    """Entra ID sign-in and audit logs (`_source` tells them apart: `azure.signinlogs` / `azure.auditlogs`)."""

    name = "azure.entra"
    logsources: ClassVar[tuple[LogSourceMapping, ...]] = (
        LogSourceMapping(
            product="azure",
            service="signinlogs",
            conditions={"_source": (SIGNIN,)},
            renames={"Username": "userPrincipalName", "ClientApp": "clientAppUsed"},
        ),
        LogSourceMapping(
            product="azure",
            service="auditlogs",
            conditions={"_source": (AUDIT,)},
            renames={"Initiatedby": "initiatedBy.user.userPrincipalName"},
        ),
    )
    wrappers: ClassVar[tuple[str, ...]] = ("value", "records")

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """Graph signIn / directoryAudit objects, or diagnostic records of the aadiam provider."""
        if sniff_json(
            head, (b'"createdDateTime"', b'"userPrincipalName"'), (b'"appDisplayName"', b'"clientAppUsed"')
        ):
            return 0.95
        if sniff_json(
            head, (b'"activityDisplayName"', b'"activityDateTime"'), (b'"loggedByService"', b'"initiatedBy"')
        ):
            return 0.95
        if sniff_json(head, (b'"properties"', b'"category"'), (b"SignInLogs", b'"AuditLogs"', b"aadiam")):
            return 0.95
        return 0.0

    def row(self, obj: dict[str, Any]) -> dict[str, Any] | str:
        """Flatten one sign-in or audit record into the names the rules use."""
        row: dict[str, Any] = flatten(obj)
        props = obj.get("properties")
        if isinstance(props, dict):
            for key, value in flatten(props).items():
                row.setdefault(key, value)
        category = (row.get("category") or "").lower()
        if category in _SIGNIN_CATEGORIES or "createdDateTime" in row:
            return self._signin(row)
        if category == "auditlogs" or "activityDateTime" in row:
            return self._audit(row)
        return "not an Entra ID sign-in or audit record: no createdDateTime, activityDateTime or category"

    @staticmethod
    def _signin(row: dict[str, Any]) -> dict[str, Any]:
        code = row.get("resultType") or row.get("status.errorCode")
        row.setdefault("ResultType", code)
        failure = row.get("resultDescription") or row.get("status.failureReason")
        if failure:
            row.setdefault("ResultDescription", failure)
        row["_source"] = SIGNIN
        row["_time"] = row.get("createdDateTime") or row.get("time")
        row["_user"] = row.get("userPrincipalName") or row.get("servicePrincipalName")
        row["_src_ip"] = row.get("ipAddress") or row.get("callerIpAddress")
        row["_action"] = "Sign-in activity"
        row["_outcome"] = None if code is None else "success" if code == "0" else "failure"
        return row

    @staticmethod
    def _audit(row: dict[str, Any]) -> dict[str, Any]:
        # Graph names the operation activityDisplayName; Log Analytics calls it OperationName.
        row.setdefault("operationName", row.get("activityDisplayName"))
        result = (row.get("result") or row.get("resultType") or "").lower()
        row["_source"] = AUDIT
        row["_time"] = row.get("activityDateTime") or row.get("time")
        row["_user"] = row.get("initiatedBy.user.userPrincipalName") or row.get("initiatedBy.app.displayName")
        row["_src_ip"] = row.get("initiatedBy.user.ipAddress") or row.get("callerIpAddress")
        row["_action"] = row.get("activityDisplayName") or row.get("operationName")
        row["_outcome"] = result if result in ("success", "failure") else None
        return row
