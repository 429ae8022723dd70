"""`watchkeeper ingest` and `watchkeeper query` end to end, over generated files and the shared data sets."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from tests.cli.invoking import query, run
from watchkeeper.cli.app import app


def cloudtrail(path: Path, records: list[dict[str, Any]]) -> None:
    """Write a CloudTrail file (`{"Records": [...]}`)."""
    path.write_bytes(orjson.dumps({"Records": records}))


def event(i: int, **extra: Any) -> dict[str, Any]:
    """One plausible CloudTrail record."""
    return {
        "eventVersion": "1.08",
        "eventTime": f"2024-05-0{1 + i % 2}T10:00:{i % 60:02d}Z",
        "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject",
        "awsRegion": "eu-west-1",
        "sourceIPAddress": f"198.51.100.{i % 250}",
        "eventID": f"00000000-0000-0000-0000-{i:012d}",
        "userIdentity": {"type": "IAMUser", "userName": f"user{i % 3}"},
        **extra,
    }


def test_ingest_folder_twice_counts_unchanged(tmp_path: Path) -> None:
    inputs, lake = tmp_path / "in", tmp_path / "lake"
    inputs.mkdir()
    cloudtrail(inputs / "a.json", [event(i) for i in range(30)])
    cloudtrail(inputs / "b.json", [event(i) for i in range(30, 50)])
    first = run("ingest", str(inputs), "--lake", str(lake))
    assert "50" in first.stdout
    counts = "SELECT source, count(*) AS n, count(DISTINCT event_id) AS ids FROM events GROUP BY source"
    assert query(lake, counts) == [{"source": "aws.cloudtrail", "n": 50, "ids": 50}]
    run("ingest", str(inputs), "--lake", str(lake))
    assert query(lake, counts) == [{"source": "aws.cloudtrail", "n": 50, "ids": 50}]
    days = query(
        lake, "SELECT CAST(time AS DATE)::VARCHAR AS d, count(*) AS n FROM events GROUP BY d ORDER BY d"
    )
    assert days == [{"d": "2024-05-01", "n": 25}, {"d": "2024-05-02", "n": 25}]
    assert sorted(p.name for p in (lake / "source=aws.cloudtrail").iterdir()) == [
        "day=2024-05-01",
        "day=2024-05-02",
    ]


def test_new_field_in_later_file_adds_column(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    cloudtrail(tmp_path / "old.json", [event(i) for i in range(5)])
    cloudtrail(tmp_path / "new.json", [event(i, errorCode="AccessDenied") for i in range(100, 103)])
    run("ingest", str(tmp_path / "old.json"), "--lake", str(lake))
    run("ingest", str(tmp_path / "new.json"), "--lake", str(lake))
    rows = query(
        lake,
        'SELECT count(*) FILTER ("errorCode" IS NULL) AS old, count("errorCode") AS new FROM aws_cloudtrail',
    )
    assert rows == [{"old": 5, "new": 3}]


def test_bad_records_are_dead_lettered_not_fatal(tmp_path: Path) -> None:
    lake, dead = tmp_path / "lake", tmp_path / "dead.jsonl"
    cloudtrail(tmp_path / "good.json", [event(i) for i in range(4)])
    (tmp_path / "bad.json").write_bytes(b'{"Records": [{"eventVersion": "1.08", "eventTime": ')
    result = run(
        "ingest",
        str(tmp_path / "good.json"),
        str(tmp_path / "bad.json"),
        "--lake",
        str(lake),
        "--dead-letter",
        str(dead),
    )
    assert "bad.json" in result.stderr
    assert [orjson.loads(line)["file"] for line in dead.read_bytes().splitlines()] == [
        str(tmp_path / "bad.json")
    ]
    assert query(lake, "SELECT count(*) AS n FROM events") == [{"n": 4}]


def test_query_formats(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    cloudtrail(tmp_path / "a.json", [event(i) for i in range(3)])
    run("ingest", str(tmp_path / "a.json"), "--lake", str(lake))
    sql = 'SELECT "eventID" AS id, time FROM aws_cloudtrail JOIN events ON _event_id = event_id ORDER BY id'
    as_csv = list(
        csv.DictReader(run("query", "--lake", str(lake), "--format", "csv", sql).stdout.splitlines())
    )
    as_json = query(lake, sql)
    assert [r["id"] for r in as_csv] == [r["id"] for r in as_json] == [event(i)["eventID"] for i in range(3)]
    assert as_json[0]["time"].startswith("2024-05-01T10:00:00")
    table = run("query", "--lake", str(lake), sql).stdout
    assert "id" in table and "00000000" in table


def test_query_without_lake_fails_cleanly(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["query", "--lake", str(tmp_path / "none"), "SELECT 1"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no lake at")


# ---- the shared data sets -------------------------------------------------------------------


def counts_by_source(lake: Path) -> dict[str, int]:
    """Events per source in the lake."""
    return {
        r["source"]: r["n"] for r in query(lake, "SELECT source, count(*) AS n FROM events GROUP BY source")
    }


@pytest.mark.parametrize(
    "folder",
    [
        "zeek-json",
        "zeek-default",
    ],
)
def test_zeek_wrccdc(datasets: Path, tmp_path: Path, folder: str) -> None:
    run("ingest", str(datasets / "zeek-wrccdc" / folder), "--lake", str(tmp_path))
    assert query(tmp_path, "SELECT count(*) AS n FROM events WHERE source LIKE 'zeek%'") == [{"n": 158_439}]


def test_auth_log_and_ssh_brute_force(datasets: Path, tmp_path: Path) -> None:
    run("ingest", str(datasets / "elastic-examples" / "auth" / "auth.log"), "--lake", str(tmp_path))
    assert counts_by_source(tmp_path) == {"linux.auth": 7_121}
    top = query(
        tmp_path,
        "SELECT src_ip, count(*) AS n FROM events WHERE action = 'logon' AND outcome = 'failure' "
        "GROUP BY src_ip ORDER BY n DESC LIMIT 3",
    )
    assert top[0] == {"src_ip": "24.151.103.17", "n": 157}
    assert top[1]["n"] < 157


def test_cloudtrail_stratus(datasets: Path, tmp_path: Path) -> None:
    folder = datasets / "cloudtrail-stratus"
    expected = 0
    for path in folder.glob("aws.*.json"):
        try:
            expected += len(orjson.loads(path.read_bytes())["Records"])
        except orjson.JSONDecodeError:
            continue  # the deliberately malformed file
    dead = tmp_path / "dead.jsonl"
    run(
        "ingest",
        *map(str, sorted(folder.glob("aws.*.json"))),
        "--lake",
        str(tmp_path / "lake"),
        "--dead-letter",
        str(dead),
    )
    assert counts_by_source(tmp_path / "lake") == {"aws.cloudtrail": expected}
    assert len(dead.read_bytes().splitlines()) == 1
    # The zip holds the same files: nothing new.
    run("ingest", str(folder / "cloudtrail.zip"), "--lake", str(tmp_path / "lake"))
    assert counts_by_source(tmp_path / "lake") == {"aws.cloudtrail": expected}


def otrf_members(datasets: Path) -> dict[str, dict[str, int]]:
    """Manifest events per archive, per member."""
    out: dict[str, dict[str, int]] = {}
    with (datasets / "security-datasets" / "manifest.csv").open() as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["archive"], {})[row["member"]] = int(row["events"])
    return out


# The smallest archive of each kind, so the default run stays short; `-m slow` does all.
OTRF_SAMPLE = ("atomic/aws", "atomic/windows", "compound")


@pytest.mark.parametrize("platform", OTRF_SAMPLE)
def test_otrf_archive_sample(datasets: Path, tmp_path: Path, platform: str) -> None:
    archives = {a: m for a, m in otrf_members(datasets).items() if a.startswith(f"datasets/{platform}/")}
    archive, members = min(archives.items(), key=lambda item: sum(item[1].values()))
    run("ingest", str(datasets / "security-datasets" / archive), "--lake", str(tmp_path))
    by_file = {
        r["file"].rsplit("!", 1)[-1]: r["n"]
        for r in query(tmp_path, "SELECT file, count(*) AS n FROM events GROUP BY file")
    }
    assert by_file == members


@pytest.mark.slow
def test_otrf_all_archives(datasets: Path, tmp_path: Path) -> None:
    expected: dict[str, int] = {}
    for members in otrf_members(datasets).values():
        for member, events in members.items():
            if not member.startswith("__MACOSX/"):  # macOS resource forks, not logs: dead-lettered
                # A member shipped in two archives holds the same events: the lake keeps them once.
                expected[member] = events
    run("ingest", str(datasets / "security-datasets" / "datasets"), "--lake", str(tmp_path))
    found = query(
        tmp_path,
        "SELECT regexp_extract(file, '[^!]*$') AS member, min(source) AS source, count(*) AS n "
        "FROM events GROUP BY 1",
    )
    assert {r["member"]: r["n"] for r in found if r["member"] in expected} == expected
    # The manifest lists neither the compound campaigns' Zeek logs nor the Linux auditd members.
    assert {r["source"].split(".")[0] for r in found if r["member"] not in expected} == {"zeek", "linux"}


def test_ingest_with_a_field_mapping(tmp_path: Path) -> None:
    """`--map` reads a CSV no source recognises, its columns mapped onto the core fields."""
    data = tmp_path / "firewall.csv"
    data.write_text(
        "Date,User,Src,Action\n"
        "2026-11-20T10:00:00Z,alice,10.0.0.5,allow\n"
        "2026-11-20T10:01:00Z,bob,10.0.0.9,deny\n",
        encoding="utf-8",
    )
    lake = tmp_path / "lake"
    run("ingest", str(data), "--lake", str(lake), "--map", "time=Date", "--map", "user=User",
        "--map", "src_ip=Src", "--map-format", "csv", "--map-source", "firewall")
    rows = query(lake, "SELECT source, user, src_ip, CAST(time AS VARCHAR) AS t FROM events ORDER BY t")
    assert rows == [
        {"source": "firewall", "user": "alice", "src_ip": "10.0.0.5", "t": "2026-11-20 10:00:00+00"},
        {"source": "firewall", "user": "bob", "src_ip": "10.0.0.9", "t": "2026-11-20 10:01:00+00"},
    ]
    assert query(lake, "SELECT Action FROM firewall ORDER BY Action") == [{"Action": "allow"}, {"Action": "deny"}]


def test_a_bad_mapping_is_one_error_line(tmp_path: Path) -> None:
    data = tmp_path / "x.csv"
    data.write_text("a\n1\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["ingest", str(data), "--lake", str(tmp_path / "lake"), "--map", "nocolumn"])
    assert result.exit_code != 0


def test_lake_commands_exit_without_noise_on_stderr(tmp_path: Path) -> None:
    """As a user runs them (`python -m watchkeeper`, real exit): stderr holds nothing.

    DuckDB 2.x binds with nanobind, which prints "leaked type" warnings at exit when the
    interpreter's final collection is skipped (`gc.freeze`).
    """
    inputs, lake = tmp_path / "in", tmp_path / "lake"
    inputs.mkdir()
    cloudtrail(inputs / "a.json", [event(i) for i in range(5)])
    for args in (
        ["ingest", str(inputs), "--lake", str(lake)],
        ["query", "--lake", str(lake), "--format", "csv", "SELECT count(*) AS n FROM events"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "watchkeeper", *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr[:500]
    assert done.stdout.split() == ['"n"', "5"]
