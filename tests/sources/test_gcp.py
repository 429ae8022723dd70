"""Google Cloud audit log entries."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sources.reading import read_with
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.gcp import GcpAudit

ENTRY: dict[str, Any] = {
    "protoPayload": {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "authenticationInfo": {"principalEmail": "erin@example.com"},
        "requestMetadata": {"callerIp": "203.0.113.20", "callerSuppliedUserAgent": "gcloud"},
        "serviceName": "iam.googleapis.com",
        "methodName": "google.iam.admin.v1.CreateServiceAccountKey",
        "authorizationInfo": [{"permission": "iam.serviceAccountKeys.create", "granted": True}],
        "resourceName": "projects/-/serviceAccounts/123",
    },
    "insertId": "abc",
    "resource": {"type": "service_account", "labels": {"project_id": "proj-1"}},
    "timestamp": "2024-03-01T13:00:00.123456Z",
    "severity": "NOTICE",
    "logName": "projects/proj-1/logs/cloudaudit.googleapis.com%2Factivity",
}
DENIED = {
    **ENTRY,
    "insertId": "def",
    "protoPayload": {**ENTRY["protoPayload"], "status": {"code": 7, "message": "denied"}},
}


def read(data: bytes) -> tuple[pa.Table | None, DeadLetter, list[str]]:
    """All batches of `data` as one table, the dead letter and its messages."""
    return read_with(GcpAudit, data, "gcp", batch_size=2)


def test_array_export_and_pubsub_wrapper() -> None:
    data = orjson.dumps([ENTRY, DENIED, {"data": ENTRY}, {"textPayload": "x"}], option=orjson.OPT_INDENT_2)
    assert GcpAudit.sniff(data[:4096], "gcp.json") >= 0.9
    table, dead, said = read(data)
    assert table is not None and table.num_rows == 3
    assert dead.count == 1 and said[0].startswith("gcp, record 4")
    assert table.column("protoPayload.methodName").to_pylist() == [ENTRY["protoPayload"]["methodName"]] * 3
    assert table.column("_outcome").to_pylist() == ["success", "failure", "success"]
    assert table.column("_user").to_pylist() == ["erin@example.com"] * 3
    assert table.column("_host").to_pylist() == ["proj-1"] * 3
    assert "iam.serviceAccountKeys.create" in table.column("protoPayload.authorizationInfo").to_pylist()[0]
    columns = set(table.schema.names)
    # SigmaHQ's gcp.audit field names resolve through the mapping's renames.
    assert set(GcpAudit.logsources[0].renames.values()) <= columns


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1024))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    read(data)
