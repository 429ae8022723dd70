"""`watchkeeper ingest --jobs N`: files read by worker processes, the lake the same as with one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.cli.invoking import query, run
from tests.cli.test_hunt_cli import event_line
from tests.conftest import DATASETS, need
from watchkeeper.cli.app import app
from watchkeeper.errors import WorkerError
from watchkeeper.ingest_parallel import Mapping, _work, ingest_parallel
from watchkeeper.lake import LakeWriter
from watchkeeper.sources.deadletter import DeadLetter

ZEEK = DATASETS / "zeek-wrccdc" / "zeek-json"
#: Small Zeek JSON logs: 207 to 4,122 records each.
ZEEK_LOGS = ("notice", "ntlm", "ntp", "rdp", "smtp", "ssh")
CLOUDTRAIL = ("aws.execution.ec2-user-data.json", "aws.defense-evasion.cloudtrail-delete.json")
COUNTS = "SELECT source, count(*) AS n, count(DISTINCT event_id) AS ids FROM events GROUP BY source ORDER BY source"


def _dead(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return {json.dumps(json.loads(line), sort_keys=True) for line in lines}


def _ids(lake: Path) -> set[str]:
    return {r["event_id"] for r in query(lake, "SELECT event_id FROM events")}


def _ingest(inputs: Path, lake: Path, jobs: str, *extra: str) -> str:
    result = CliRunner().invoke(app, ["ingest", str(inputs), "--lake", str(lake), "--jobs", jobs, *extra],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Zeek JSON logs, auth.log, CloudTrail files and one partly bad file, in one folder."""
    folder = tmp_path_factory.mktemp("ingest-jobs") / "inputs"
    (folder / "zeek").mkdir(parents=True)
    for name in ZEEK_LOGS:
        (folder / "zeek" / f"{name}.json.gz").symlink_to(need(ZEEK / f"{name}.json.gz"))
    (folder / "auth.log").symlink_to(need(DATASETS / "elastic-examples" / "auth" / "auth.log"))
    for name in CLOUDTRAIL:
        (folder / name).symlink_to(need(DATASETS / "cloudtrail-stratus" / name))
    (folder / "mixed.json").write_bytes(b"\n".join([
        event_line(1, "C:\\Windows\\System32\\whoami.exe", "whoami /all"),
        b"this line is not JSON at all",
        event_line(3, "C:\\Windows\\System32\\net.exe", "net user"),
        b'{"Event": {"System": {"EventID": 1',
    ]) + b"\n")
    (folder / "empty.log").write_bytes(b"")
    head = need(DATASETS / "elastic-examples" / "auth" / "auth.log").read_bytes().splitlines()[:3]
    (folder / "latin1-auth.log").write_bytes(b"\n".join([head[0], head[1] + b" caf\xe9", head[2]]) + b"\n")
    return folder


@pytest.fixture(scope="module")
def lakes(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`inputs` ingested with --jobs 1 into one lake and --jobs 2 into another: outputs and lakes."""
    root = tmp_path_factory.mktemp("lakes")
    return {jobs: (_ingest(inputs, root / f"lake-{jobs}", jobs), root / f"lake-{jobs}") for jobs in ("1", "2")}


def test_workers_write_the_events_one_process_writes(lakes: dict[str, Any]) -> None:
    one, many = lakes["1"][1], lakes["2"][1]
    counts = query(one, COUNTS)
    assert {r["source"].split(".")[0] for r in counts} >= {"zeek", "linux", "aws", "windows"}, counts
    assert all(r["n"] == r["ids"] for r in counts)
    assert query(many, COUNTS) == counts
    assert _ids(many) == _ids(one)


def test_the_dead_letters_are_the_same(lakes: dict[str, Any]) -> None:
    one = _dead(lakes["1"][1] / "deadletter.jsonl")
    assert len(one) >= 4  # three unreadable lines, the empty file, a repaired line
    assert any(json.loads(e).get("kept") for e in one)
    assert _dead(lakes["2"][1] / "deadletter.jsonl") == one


def test_the_summary_is_the_same(lakes: dict[str, Any]) -> None:
    def summary(output: str) -> list[str]:
        lines = output.replace("lake-1", "lake-N").replace("lake-2", "lake-N").splitlines()
        return sorted(line for line in lines if "ingested into" not in line)

    assert "unreadable record(s)" in lakes["1"][0]
    assert "replacement characters" in lakes["1"][0]
    assert summary(lakes["2"][0]) == summary(lakes["1"][0])


def test_ingesting_again_adds_nothing_but_dead_letters(lakes: dict[str, Any], inputs: Path) -> None:
    lake = lakes["2"][1]
    counts, dead = query(lake, COUNTS), (lake / "deadletter.jsonl").read_text().splitlines()
    _ingest(inputs, lake, "2")
    assert query(lake, COUNTS) == counts
    # The lake's dead letter keeps every ingest's entries: the workers' are added, not replacing.
    again = (lake / "deadletter.jsonl").read_text().splitlines()
    assert again[:len(dead)] == dead
    assert sorted(again[len(dead):]) == sorted(dead)


def test_a_mapped_ingest_is_the_same(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for part in range(3):
        rows = "".join(f"2026-11-2{part}T10:{i % 60:02d}:00Z,user{i % 7},10.0.{part}.{i % 250},allow\n"
                       for i in range(500))
        (inputs / f"fw-{part}.csv").write_text("Date,User,Src,Action\n" + rows, encoding="utf-8")
    (inputs / "fw-bad.csv").write_text("Date,User,Src,Action\nnot a time,x,y,z\n", encoding="utf-8")
    args = ("--map", "time=Date", "--map", "user=User", "--map", "src_ip=Src", "--map-format", "csv",
            "--map-source", "firewall", "--batch-size", "100")
    for jobs in ("1", "2"):
        _ingest(inputs, tmp_path / jobs, jobs, *args)
    counts = query(tmp_path / "1", COUNTS)
    assert counts[0]["source"] == "firewall" and counts[0]["n"] >= 1500, counts
    assert query(tmp_path / "2", COUNTS) == counts
    assert _ids(tmp_path / "2") == _ids(tmp_path / "1")
    assert _dead(tmp_path / "2" / "deadletter.jsonl") == _dead(tmp_path / "1" / "deadletter.jsonl")


def test_one_input_file_is_read_in_process(tmp_path: Path) -> None:
    data = tmp_path / "one.json"
    data.write_bytes(event_line(1, "C:\\Windows\\System32\\whoami.exe", "whoami") + b"\n")
    with LakeWriter(tmp_path / "lake") as writer:
        assert not ingest_parallel([data], writer, DeadLetter(), 2, 100)


# --- workers that fail -----------------------------------------------------------------------------------


def _fails(index: int, paths: list[str], batch_size: int, mapping: Mapping | None, letter: Path | None,
           outbox: Any) -> None:
    """The real worker; the second is given a mapping whose format does not exist, and raises."""
    _work(index, paths, batch_size, Mapping({"time": "Date"}, "nonsense", "x") if index else mapping, letter,
          outbox)


def _dies(index: int, paths: list[str], batch_size: int, mapping: Mapping | None, letter: Path | None,
          outbox: Any) -> None:
    """A worker that ends without a word, as one killed for memory would."""
    import os

    os._exit(3)


@pytest.fixture
def two_files(tmp_path: Path) -> list[Path]:
    paths = []
    for i in (1, 2):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_bytes(event_line(i, "C:\\Windows\\System32\\whoami.exe", "whoami") + b"\n")
    return paths


def test_a_worker_that_dies_is_an_error_not_a_hang(two_files: list[Path], tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(WorkerError, match=r"ingest worker \d of 2 exited with 3"), \
            LakeWriter(tmp_path / "lake") as writer:
        ingest_parallel(two_files, writer, DeadLetter(), 2, 100, worker=_dies)
    assert time.monotonic() - started < 60
    assert not list((tmp_path / "lake").glob("source=*"))


_DRIVER = """
import sys
import watchkeeper.ingest_parallel
from tests.cli.test_ingest_jobs import _fails
from watchkeeper.cli import main
watchkeeper.ingest_parallel._work = _fails
sys.argv = ["watchkeeper", *sys.argv[1:]]
main()
"""


def test_a_worker_error_is_one_error_line(two_files: list[Path], tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _DRIVER, "ingest", *map(str, two_files), "--lake", str(lake),
                           "--jobs", "2"], capture_output=True, text=True, cwd=Path(__file__).parents[2],
                          timeout=120)
    assert time.monotonic() - started < 60
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "ingest worker 2 of 2 failed: " in errors[0] and "nonsense" in errors[0]
    assert not list(lake.glob("source=*"))  # nothing published


def test_negative_jobs_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ingest", str(tmp_path), "--lake", str(tmp_path / "lake"), "--jobs", "-1"])
    assert result.exit_code == 2
    assert "--jobs" in result.output


def test_jobs_1_reads_in_process(inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default is today's path: no worker is started."""
    import watchkeeper.ingest_parallel

    def refuse(*args: Any, **kwargs: Any) -> bool:
        raise AssertionError("workers started")

    monkeypatch.setattr(watchkeeper.ingest_parallel, "ingest_parallel", refuse)
    run("ingest", str(inputs / "zeek"), "--lake", str(tmp_path / "lake"))
