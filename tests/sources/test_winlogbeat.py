"""Winlogbeat (ECS JSON) Windows events mapped back to Windows field names."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sources.reading import read_with
from watchkeeper.sources.cloudtrail import CloudTrail
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.winlogbeat import Winlogbeat

SYSMON = {
    "@timestamp": "2024-03-01T14:00:00.000Z",
    "event": {
        "code": "1",
        "kind": "event",
        "provider": "Microsoft-Windows-Sysmon",
        "action": "Process Create",
    },
    "host": {"name": "ws01.contoso.local"},
    "winlog": {
        "channel": "Microsoft-Windows-Sysmon/Operational",
        "computer_name": "WS01.contoso.local",
        "event_id": 1,
        "provider_name": "Microsoft-Windows-Sysmon",
        "record_id": 4242,
        "event_data": {
            "Image": "C:\\Windows\\System32\\cmd.exe",
            "CommandLine": "cmd.exe /c whoami",
            "User": "CONTOSO\\alice",
            "ParentImage": "C:\\Windows\\explorer.exe",
        },
    },
}
LOGON = {
    "@timestamp": "2024-03-01T14:01:00Z",
    "event": {"code": "4625", "outcome": "failure"},
    "winlog": {
        "channel": "Security",
        "computer_name": "DC01",
        "event_id": "4625",
        "event_data": {
            "TargetUserName": "bob",
            "TargetDomainName": "CONTOSO",
            "IpAddress": "10.0.0.5",
            "LogonType": "3",
        },
    },
}


def read(data: bytes) -> tuple[pa.Table | None, DeadLetter, list[str]]:
    """All batches of `data` as one table, the dead letter and its messages."""
    return read_with(Winlogbeat, data, "wlb", batch_size=2)


def test_fields_mapped_back() -> None:
    data = b"\n".join(
        [orjson.dumps(SYSMON), orjson.dumps(LOGON), orjson.dumps({"winlog": {"channel": "x"}}), b"7"]
    )
    assert Winlogbeat.sniff(data[:4096], "wlb.json") >= 0.9
    assert CloudTrail.sniff(data[:4096], "wlb.json") == 0.0
    table, dead, said = read(data)
    assert table is not None and table.num_rows == 2
    assert [m.split(":")[0] for m in said] == ["wlb, record 3", "wlb, record 4"] and dead.count == 2
    assert table.column("EventID").to_pylist() == ["1", "4625"]
    assert table.column("Channel").to_pylist() == ["Microsoft-Windows-Sysmon/Operational", "Security"]
    assert table.column("Computer").to_pylist() == ["WS01.contoso.local", "DC01"]
    assert table.column("Provider_Name").to_pylist() == ["Microsoft-Windows-Sysmon", None]
    assert table.column("EventRecordID").to_pylist() == ["4242", None]
    assert table.column("CommandLine").to_pylist() == ["cmd.exe /c whoami", None]
    assert table.column("User").to_pylist() == ["CONTOSO\\alice", None]
    assert table.column("_user").to_pylist() == [None, "CONTOSO\\bob"]
    assert table.column("_outcome").to_pylist() == [None, "failure"]
    assert table.column("_process").to_pylist() == ["C:\\Windows\\System32\\cmd.exe", None]
    assert not any(n.startswith("winlog.") for n in table.schema.names)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1024))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    read(data)


def test_winlogbeat_6_layout_from_otrf_archive(datasets: Path) -> None:
    """Winlogbeat 6.x documents (top-level `event_data`, `log_name`, `event_id`) in a real OTRF archive."""
    archive = datasets / "security-datasets/datasets/atomic/windows/defense_evasion/host/empire_wdigest_downgrade.tar.gz"
    with tarfile.open(archive) as tar:
        member = next(m for m in tar if m.isfile() and m.name.endswith(".json"))
        data = tar.extractfile(member).read()  # type: ignore[union-attr]
    lines = [line for line in data.splitlines() if line.strip()]
    assert Winlogbeat.sniff(data[:65536], member.name) > 0.5
    dead = DeadLetter()
    batches = [pa.Table.from_batches([b]) for b in Winlogbeat().read(io.BytesIO(data), member.name, dead)]
    table = pa.concat_tables(batches, promote_options="permissive")
    assert dead.count == 0
    assert table.num_rows == len(lines)
    first = orjson.loads(lines[0])
    row = table.slice(0, 1).to_pylist()[0]
    assert row["EventID"] == str(first["event_id"])
    assert row["Channel"] == first["log_name"]
    assert row["Computer"] == first["computer_name"]
    assert row["EventRecordID"] == str(first["record_number"])
    for key, value in first["event_data"].items():
        assert row[key] == value
