"""CloudTrail source: real Stratus and OTRF records, SigmaHQ field names, bad input, arbitrary bytes."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from sigma.collection import SigmaCollection
from sigma.rule import SigmaDetection, SigmaDetectionItem

from watchkeeper.sources.cloudtrail import CloudTrail
from watchkeeper.sources.deadletter import DeadLetter

STRATUS = {
    "aws.credential-access.secretsmanager-retrieve-secrets.json": 10,
    "aws.defense-evasion.cloudtrail-delete.json": 1,
    "aws.exfiltration.ec2-share-ebs-snapshot.json": 1,
    "aws.execution.ec2-user-data.json": 0,  # deliberately malformed JSON
}


def read(data: bytes, origin: str = "t.json") -> tuple[pa.Table | None, DeadLetter, list[str]]:
    """All batches of `data` as one table, the dead letter and its announcements."""
    said: list[str] = []
    dead = DeadLetter(announce=said.append)
    batches = list(CloudTrail(batch_size=4).read(io.BytesIO(data), origin, dead))
    assert all(b.num_rows <= 4 for b in batches)
    if not batches:
        return None, dead, said
    # Batches of one file may differ in columns: unify them the way the lake does.
    return (
        pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="default"),
        dead,
        said,
    )


def test_stratus_counts_and_malformed_file(datasets: Path) -> None:
    total = 0
    for name, expected in STRATUS.items():
        path = datasets / "cloudtrail-stratus" / name
        assert CloudTrail.sniff(path.read_bytes()[:4096], name) >= 0.9
        table, dead, said = read(path.read_bytes(), name)
        rows = table.num_rows if table is not None else 0
        assert rows == expected
        total += rows
        if expected:
            assert dead.count == 0
            assert table is not None
            assert table.column("_source").to_pylist() == ["aws.cloudtrail"] * rows
            assert table.column("_time").null_count == 0
            assert set(table.column("_host").to_pylist()) == {"677301038893"}
            assert set(table.column("_src_ip").to_pylist()) == {"62.167.105.104"}
            assert table.column("userAgent").null_count == 0
        else:
            assert dead.count == 1
            assert said[0].startswith(name) and "invalid JSON" in said[0]
    assert total == 12


def test_stratus_zip_members_match_files(datasets: Path) -> None:
    with zipfile.ZipFile(datasets / "cloudtrail-stratus" / "cloudtrail.zip") as zf:
        for name in zf.namelist():
            table, dead, _ = read(zf.read(name), name)
            assert (table.num_rows if table is not None else 0) == STRATUS[name]
            assert dead.count == (0 if STRATUS[name] else 1)


def test_otrf_aws_members_match_manifest(datasets: Path) -> None:
    root = datasets / "security-datasets"
    with (root / "manifest.csv").open(newline="") as fh:
        wanted = {
            (r["archive"], r["member"]): int(r["events"])
            for r in csv.DictReader(fh)
            if "/aws/" in r["archive"]
        }
    assert wanted
    for (archive, member), events in wanted.items():
        with zipfile.ZipFile(root / archive) as zf:
            data = zf.read(member)
        assert CloudTrail.sniff(data[:4096], member) >= 0.9
        table, dead, _ = read(data, member)
        assert table is not None and table.num_rows == events and dead.count == 0
        assert table.column("_time").null_count == 0
        assert table.column("_user").null_count == 0


def _fields(item: SigmaDetection | SigmaDetectionItem) -> list[tuple[str | None, list[str]]]:
    if isinstance(item, SigmaDetectionItem):
        return [(item.field, [str(v) for v in item.value])]
    return [f for sub in item.detection_items for f in _fields(sub)]


def test_rule_fields_exist_for_their_event_names(datasets: Path) -> None:
    """Each AWS rule selecting an eventName seen in the data finds the fields of its selections."""
    tables = [read((datasets / "cloudtrail-stratus" / n).read_bytes())[0] for n, c in STRATUS.items() if c]
    columns: dict[str, set[str]] = {}
    for table in tables:
        assert table is not None
        for name in set(table.column("eventName").to_pylist()):
            columns.setdefault(name, set()).update(table.schema.names)
    checked: set[str] = set()
    for path in sorted((datasets / "sigma/rules/cloud/aws").rglob("*.yml")):
        for rule in SigmaCollection.from_yaml(path.read_text()).rules:
            for ident, detection in rule.detection.detections.items():
                pairs = _fields(detection)
                names = {v for f, vs in pairs if f == "eventName" for v in vs}
                for event_name in names & set(columns):
                    if ident.startswith("filter"):
                        continue
                    fields = {f for f, _ in pairs if f is not None}
                    assert fields <= columns[event_name], (
                        path.name,
                        event_name,
                        fields - columns[event_name],
                    )
                    checked.add(event_name)
    # aws_cloudtrail_disable_logging (DeleteTrail), aws_snapshot_backup_exfiltration.
    assert {"DeleteTrail", "ModifySnapshotAttribute"} <= checked


def test_bad_input_is_dead_lettered_and_the_rest_read() -> None:
    good = {
        "eventSource": "iam.amazonaws.com",
        "eventName": "CreateUser",
        "eventTime": "2024-01-01T00:00:00Z",
    }
    lines = [orjson.dumps(good), b"[1, 2]", b"{not json", orjson.dumps({**good, "errorCode": "AccessDenied"})]
    table, dead, said = read(b"\n".join(lines))
    assert table is not None and table.num_rows == 2
    assert table.column("_outcome").to_pylist() == ["success", "failure"]
    assert table.column("_record").to_pylist() == [1, 4]
    assert (
        dead.count == 2 and said[0].startswith("t.json, record 2") and said[1].startswith("t.json, record 3")
    )
    records = orjson.dumps({"Records": [good, "oops", good]}, option=orjson.OPT_INDENT_2)
    table, dead, said = read(records)
    assert table is not None and table.num_rows == 2 and dead.count == 1
    assert "record 2" in said[0]


def test_records_file_over_the_limit_is_refused() -> None:
    class Small(CloudTrail):
        max_bytes = 200

    event = {"eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": "x" * 300}
    dead = DeadLetter()
    data = orjson.dumps({"Records": [event]}, option=orjson.OPT_INDENT_2)
    assert list(Small().read(io.BytesIO(data), "big.json", dead)) == []
    assert dead.count == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    table, dead, _ = read(data)
    assert (table.num_rows if table is not None else 0) >= 0 and dead.count >= 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3), max_size=6))
def test_every_line_is_read_or_dead_lettered(objs: list[dict[str, str]]) -> None:
    lines = [orjson.dumps({**o, "eventName": "X"}) for o in objs]
    table, dead, _ = read(b"\n".join(lines) + b"\n")
    assert (table.num_rows if table is not None else 0) + dead.count == len(objs)
