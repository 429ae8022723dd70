"""Entra ID sign-in and audit logs: Graph objects and diagnostic-settings records."""

from __future__ import annotations

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sources.reading import read_with
from watchkeeper.sources.azure import AzureActivity
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.entra import EntraId

GRAPH_SIGNIN = {
    "id": "66ea54eb-6301-4ee5-be62-ff5a759b0100",
    "createdDateTime": "2024-03-01T10:15:00Z",
    "userDisplayName": "Alice",
    "userPrincipalName": "alice@contoso.com",
    "appDisplayName": "Azure Portal",
    "ipAddress": "203.0.113.7",
    "clientAppUsed": "Browser",
    "conditionalAccessStatus": "notApplied",
    "status": {"errorCode": 50126, "failureReason": "Invalid username or password."},
    "deviceDetail": {"deviceId": "", "operatingSystem": "Windows 10", "isCompliant": False, "trustType": ""},
    "location": {"city": "Paris", "countryOrRegion": "FR"},
}
DIAG_SIGNIN = {
    "time": "2024-03-01T10:16:00.1234567Z",
    "resourceId": "/tenants/11111111-2222-3333-4444-555555555555/providers/Microsoft.aadiam",
    "operationName": "Sign-in activity",
    "category": "SignInLogs",
    "resultType": "0",
    "callerIpAddress": "198.51.100.4",
    "properties": {
        "createdDateTime": "2024-03-01T10:16:00.1234567+00:00",
        "userPrincipalName": "bob@contoso.com",
        "status": {"errorCode": 0},
        "authenticationRequirement": "singleFactorAuthentication",
        "deviceDetail": {"trustType": "Azure AD joined", "isCompliant": True},
        "riskState": "none",
    },
}
GRAPH_AUDIT = {
    "id": "Directory_1",
    "category": "UserManagement",
    "activityDateTime": "2024-03-01T11:00:00Z",
    "activityDisplayName": "Add member to role",
    "loggedByService": "Core Directory",
    "result": "success",
    "initiatedBy": {"user": {"userPrincipalName": "admin@contoso.com", "ipAddress": "192.0.2.1"}},
    "targetResources": [{"type": "User", "modifiedProperties": [{"displayName": "Role.DisplayName"}]}],
}


def read(data: bytes) -> tuple[pa.Table | None, DeadLetter, list[str]]:
    """All batches of `data` as one table, the dead letter and its messages."""
    return read_with(EntraId, data, "entra", batch_size=2)


def test_graph_value_form_and_diagnostic_form() -> None:
    graph = orjson.dumps(
        {"@odata.context": "x", "value": [GRAPH_SIGNIN, GRAPH_AUDIT]}, option=orjson.OPT_INDENT_2
    )
    diag = orjson.dumps(DIAG_SIGNIN) + b"\n" + orjson.dumps(DIAG_SIGNIN)
    for data in (graph, diag):
        assert EntraId.sniff(data[:4096], "x.json") >= 0.9
        assert AzureActivity.sniff(data[:4096], "x.json") == 0.0
    table, dead, _ = read(graph)
    assert table is not None and table.num_rows == 2 and dead.count == 0
    assert table.column("_source").to_pylist() == ["azure.signinlogs", "azure.auditlogs"]
    assert table.column("ResultType").to_pylist()[0] == "50126"
    assert table.column("_outcome").to_pylist() == ["failure", "success"]
    assert table.column("operationName").to_pylist()[1] == "Add member to role"
    assert table.column("_user").to_pylist() == ["alice@contoso.com", "admin@contoso.com"]
    table, dead, _ = read(diag)
    assert table is not None and table.num_rows == 2 and dead.count == 0
    names = {n.lower() for n in table.schema.names}
    # Field names of SigmaHQ's signinlogs rules (compared case-insensitively).
    assert {"resulttype", "status.errorcode", "authenticationrequirement", "devicedetail.trusttype"} <= names
    assert table.column("_outcome").to_pylist() == ["success", "success"]
    assert str(table.column("_time")[0]) == "2024-03-01 10:16:00.123456+00:00"


def test_bad_records() -> None:
    data = b"\n".join([orjson.dumps(GRAPH_SIGNIN), b"[1]", b"{bad", orjson.dumps({"x": 1})])
    table, dead, said = read(data)
    assert table is not None and table.num_rows == 1 and dead.count == 3
    assert [m.split(":")[0] for m in said] == ["entra, record 2", "entra, record 3", "entra, record 4"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1024))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    read(data)
