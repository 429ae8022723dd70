"""Microsoft 365 unified audit log: JSON lines and the Purview CSV export."""

from __future__ import annotations

import csv
import io

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sources.reading import read_with
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.m365 import M365Audit

LOGIN = {
    "CreationTime": "2024-03-01T10:15:00",
    "Id": "6f0b1c2d-0000-4000-8000-000000000001",
    "Operation": "UserLoggedIn",
    "OrganizationId": "11111111-2222-3333-4444-555555555555",
    "RecordType": 15,
    "ResultStatus": "Success",
    "UserKey": "10032001A1B2C3D4",
    "UserType": 0,
    "Version": 1,
    "Workload": "AzureActiveDirectory",
    "ClientIP": "203.0.113.7:50123",
    "ObjectId": "0000000a-0000-0000-c000-000000000000",
    "UserId": "alice@contoso.com",
    "ApplicationId": "9ba1a5c7-f17a-4de9-a1f1-6178c8d51223",
    "ExtendedProperties": [{"Name": "RequestType", "Value": "Cmsi:Cmsi"}],
}
ALERT = {
    "CreationTime": "2024-03-01T11:00:00",
    "Id": "6f0b1c2d-0000-4000-8000-000000000002",
    "Operation": "AlertTriggered",
    "RecordType": 40,
    "Workload": "SecurityComplianceCenter",
    "UserId": "SecurityComplianceAlerts",
    "AlertId": "a1",
    "Name": "Suspicious inbox forwarding",
    "Severity": "High",
    "Status": "Active",
}
FAILED = {
    **LOGIN,
    "Id": "3",
    "Operation": "UserLoginFailed",
    "ResultStatus": "Failed",
    "ClientIP": "[2001:db8::1]:443",
}


def read(data: bytes) -> tuple[pa.Table | None, DeadLetter, list[str]]:
    """All batches of `data` as one table, the dead letter and its messages."""
    return read_with(M365Audit, data, "ual", batch_size=2)


def test_json_lines() -> None:
    data = b"\n".join(orjson.dumps(r) for r in (LOGIN, ALERT, FAILED))
    assert M365Audit.sniff(data[:4096], "ual.json") >= 0.9
    table, dead, _ = read(data)
    assert table is not None and table.num_rows == 3 and dead.count == 0
    assert table.column("_outcome").to_pylist() == ["success", "success", "failure"]
    assert table.column("_src_ip").to_pylist() == ["203.0.113.7", None, "2001:db8::1"]
    assert table.column("ApplicationId").to_pylist()[0] == LOGIN["ApplicationId"]
    assert table.column("Name").to_pylist()[1] == "Suspicious inbox forwarding"
    assert str(table.column("_time")[0]) == "2024-03-01 10:15:00+00:00"


def purview_csv(rows: list[tuple[str, str]]) -> bytes:
    """A Purview audit search export: header and one row per (operation, AuditData)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["RecordId", "CreationDate", "RecordType", "Operation", "UserId", "AuditData"])
    for i, (operation, audit) in enumerate(rows):
        writer.writerow([str(i), "2024-03-01T10:15:00.0000000Z", "15", operation, "alice@contoso.com", audit])
    return b"\xef\xbb\xbf" + out.getvalue().encode()


def test_purview_csv_with_a_bad_audit_data_row() -> None:
    data = purview_csv(
        [
            ("UserLoggedIn", orjson.dumps(LOGIN).decode()),
            ("X", "{oops"),
            ("Y", "[1]"),
            ("UserLoginFailed", orjson.dumps(FAILED).decode()),
        ]
    )
    assert M365Audit.sniff(data[:4096], "export.csv") >= 0.9
    table, dead, said = read(data)
    assert table is not None and table.num_rows == 2
    assert table.column("Operation").to_pylist() == ["UserLoggedIn", "UserLoginFailed"]
    assert dead.count == 2
    assert said[0].startswith("ual, record 3") and "AuditData is not JSON" in said[0]
    assert said[1].startswith("ual, record 4")


def test_purview_csv_with_bad_utf8_is_kept_and_reported() -> None:
    data = purview_csv([("UserLoggedIn", orjson.dumps(LOGIN).decode())])
    data = data.replace(b"alice@contoso.com", b"al\xe9ce@contoso.com")
    table, dead, said = read(data)
    assert table is not None and table.column("_user").to_pylist() == ["al\ufffdce@contoso.com"]
    assert dead.count == 0 and dead.repaired == 1
    assert said == ["ual, record 2: line 2 is not valid UTF-8 (byte 50): kept, with U+FFFD in place of the bad bytes"]


def test_other_formats_are_not_claimed() -> None:
    assert M365Audit.sniff(b'{"eventSource": "s3.amazonaws.com", "eventName": "GetObject"}', "x.json") == 0.0
    assert M365Audit.sniff(b"a,b,c\n1,2,3\n", "x.csv") == 0.0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1024))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    read(data)
    read(purview_csv([]) + data)
