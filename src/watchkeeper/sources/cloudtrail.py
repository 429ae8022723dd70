"""AWS CloudTrail: `{"Records": [...]}` files, JSON lines of single events, and forwarder wrappers.

Native fields keep CloudTrail's names flattened with dots, as SigmaHQ's cloudtrail rules write
them (`userIdentity.arn`, `requestParameters.userData`); `requestParameters` and
`responseElements` are also kept whole as JSON text for the rules that match them as a whole.
"""

from __future__ import annotations

from typing import Any, ClassVar

from watchkeeper.sources.base import LogSourceMapping
from watchkeeper.sources.jsonflat import JsonSource, flatten, sniff_json

_KEEP_JSON = frozenset({"requestParameters", "responseElements"})


def _is_ip(value: str) -> bool:
    # sourceIPAddress holds a service name ("ec2.amazonaws.com") when AWS acts for the caller.
    return bool(value) and (value[0].isdigit() or ":" in value) and not value.endswith(".com")


class CloudTrail(JsonSource):
    """AWS CloudTrail management and data events."""

    name = "aws.cloudtrail"
    logsources: ClassVar[tuple[LogSourceMapping, ...]] = (
        LogSourceMapping(product="aws", service="cloudtrail"),
    )
    wrappers: ClassVar[tuple[str, ...]] = ("Records",)

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """CloudTrail JSON: `eventSource` of an amazonaws.com service beside `eventName`."""
        if sniff_json(
            head,
            (b'"eventSource"', b'"eventName"', b"amazonaws.com"),
            (b'"awsRegion"', b'"recipientAccountId"', b'"userIdentity"', b'"eventVersion"'),
        ):
            return 0.95
        if sniff_json(head, (b'"Records"',)) and filename.lower().endswith((".json", ".json.gz")):
            # A Records file whose head is cut before the first event's fields.
            return 0.5 if b"CloudTrail" in filename.encode() or b'"eventVersion"' in head else 0.3
        return 0.0

    def row(self, obj: dict[str, Any]) -> dict[str, Any] | str:
        """Flatten one CloudTrail event and fill the core fields."""
        if "eventName" not in obj and "eventSource" not in obj:
            return "not a CloudTrail event: no eventName or eventSource"
        row: dict[str, Any] = flatten(obj, keep_json=_KEEP_JSON)
        # Forwarders (Datadog here) move the caller's address and agent into their own fields;
        # put them back under CloudTrail's names so the rules find them.
        if "sourceIPAddress" not in row and "network.client.ip" in row:
            row["sourceIPAddress"] = row["network.client.ip"]
        if "userAgent" not in row and "http.useragent" in row:
            row["userAgent"] = row["http.useragent"]
        # Logstash-shipped records (OTRF) drop eventTime for @timestamp.
        row["_time"] = row.get("eventTime") or row.get("@timestamp")
        row["_user"] = (
            row.get("userIdentity.arn")
            or row.get("userIdentity.userName")
            or row.get("userIdentity.invokedBy")
            or row.get("userIdentity.principalId")
        )
        ip = row.get("sourceIPAddress")
        row["_src_ip"] = ip if ip and _is_ip(ip) else None
        row["_action"] = row.get("eventName")
        failed = "errorCode" in row or row.get("responseElements.ConsoleLogin") == "Failure"
        row["_outcome"] = "failure" if failed else "success"
        # The account the activity happened in plays the part of the host: it is the asset an
        # incident groups on (OCSF `cloud.account.uid`).
        row["_host"] = row.get("recipientAccountId") or row.get("userIdentity.accountId")
        return row
