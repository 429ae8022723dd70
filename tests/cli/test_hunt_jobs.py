"""`watchkeeper hunt --jobs N`: input files split across worker processes, the same findings as one."""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import watchkeeper.cli  # noqa: F401  (registers every command on the app)
from tests.cli.test_hunt_cli import event_line
from tests.conftest import DATASETS, need
from watchkeeper.cli.app import app
from watchkeeper.errors import WorkerError
from watchkeeper.hunt import Detection, HuntOptions
from watchkeeper.hunt_parallel import _work, run_hunt_parallel
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.inputs import iter_members
from watchkeeper.workers import Unit, assign, end_with_parent, units_of

SAMPLES = DATASETS / "evtx-attack-samples"
#: Two folders of the samples: 33 EVTX files of a few KB to a few hundred.
FOLDERS = ("Discovery", "Persistence")


@pytest.fixture(scope="module")
def hunted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same folders hunted with --jobs 1, 2 and 0: each run's output, dead letter and summary."""
    rules = need(DATASETS / "sigma" / "rules" / "windows")
    root = tmp_path_factory.mktemp("jobs")
    inputs = root / "inputs"
    for folder in FOLDERS:
        (inputs / folder).mkdir(parents=True)
        for sample in sorted(need(SAMPLES / folder).glob("*.evtx")):
            (inputs / folder / sample.name).symlink_to(sample)
    (inputs / "bad").mkdir()
    (inputs / "bad" / "mixed.json").write_bytes(b"\n".join([
        event_line(1, "C:\\Windows\\System32\\whoami.exe", "whoami /all"),
        b"this line is not JSON at all",
        event_line(3, "C:\\Windows\\System32\\net.exe", "net user"),
        b'{"Event": {"System": {"EventID": 1',
    ]) + b"\n")
    runs: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        # Read by the workers too: spawned processes inherit the environment.
        patch.setenv("WATCHKEEPER_CACHE", str(root / "cache"))
        patch.setenv("COLUMNS", "200")
        for jobs in ("1", "2", "0"):
            out, dead = root / f"out-{jobs}.jsonl", root / f"dead-{jobs}.jsonl"
            try:
                result = CliRunner().invoke(app, ["hunt", str(inputs), "--rules", str(rules), "--format", "jsonl",
                                                  "--output", str(out), "--dead-letter", str(dead), "--jobs", jobs])
            finally:
                # The command freezes the heap of its one-shot process; this one goes on (and may load
                # DuckDB, whose types must stay collectable: see `watchkeeper.cli.main`).
                gc.unfreeze()
            assert result.exit_code == 0, (result.output, result.exception)
            runs[jobs] = (result.output, _rows(out), _rows(dead))
    return runs


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def _found(rows: list[dict[str, Any]]) -> set[tuple[str, str, int]]:
    return {(r["rule_id"], r["source_file"], r["record"]) for r in rows}


def _counts(output: str) -> tuple[str, str, str]:
    events = re.search(r"Events read ([\d,]+) from ([\d,]+) files", output)
    detections = re.search(r"([\d,]+) detections of ([\d,]+) rules on ([\d,]+) events", output)
    unreadable = re.search(r"unreadable records ([\d,]+)", output)
    assert events and detections and unreadable, output
    return events.group(0), detections.group(0), unreadable.group(0)


@pytest.mark.parametrize("jobs", ["2", "0"])
def test_workers_find_what_one_process_finds(hunted: dict[str, Any], jobs: str) -> None:
    _, one, _ = hunted["1"]
    _, many, _ = hunted[jobs]
    assert len(_found(one)) >= 50
    assert _found(many) == _found(one)
    assert len(many) == len(one)
    assert any(Path(r["source_file"]).name == "mixed.json" for r in one)


@pytest.mark.parametrize("jobs", ["2", "0"])
def test_the_summary_counts_are_the_same(hunted: dict[str, Any], jobs: str) -> None:
    one = _counts(hunted["1"][0])
    assert _counts(hunted[jobs][0]) == one
    assert "from 34 files" in one[0]
    assert one[2] == "unreadable records 2"


@pytest.mark.parametrize("jobs", ["2", "0"])
def test_the_summary_tables_are_the_same(hunted: dict[str, Any], jobs: str) -> None:
    def tables(output: str) -> str:
        return output[output.index("Detections by level"):output.index("Unreadable records were written")]

    assert "Top 10 rules" in tables(hunted["1"][0])
    assert tables(hunted[jobs][0]) == tables(hunted["1"][0])  # ties listed in one order, however counted


@pytest.mark.parametrize("jobs", ["2", "0"])
def test_the_dead_letters_are_the_same(hunted: dict[str, Any], jobs: str) -> None:
    _, _, one = hunted["1"]
    _, _, many = hunted[jobs]
    assert len(one) == 2
    assert {json.dumps(e, sort_keys=True) for e in many} == {json.dumps(e, sort_keys=True) for e in one}
    assert sorted(e["record"] for e in one) == [2, 4]


def test_warnings_are_relayed(hunted: dict[str, Any]) -> None:
    output = hunted["2"][0]
    assert "mixed.json, record 2" in output
    assert "mixed.json, record 4" in output


def test_jobs_with_a_lake_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["hunt", "--lake", str(tmp_path), "--jobs", "2"])
    assert result.exit_code == 2
    assert "--jobs" in result.output


def test_negative_jobs_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["hunt", str(tmp_path), "--jobs", "-1"])
    assert result.exit_code == 2
    assert "--jobs" in result.output


# --- splitting the inputs ------------------------------------------------------------------------------


def test_assign_balances_bytes_and_keeps_reading_order() -> None:
    sizes = [10, 100, 40, 60, 50, 0, 0, 30]
    units = [Unit(Path(f"f{i}"), s) for i, s in enumerate(sizes)]
    shares = assign(units, 2)
    assert sorted(u.path.name for share in shares for u in share) == sorted(u.path.name for u in units)
    for share in shares:
        assert [units.index(u) for u in share] == sorted(units.index(u) for u in share)
    # Largest first, each to the lighter share: 100 40 10 | 60 50 30 (and the empty files).
    assert [sum(u.size for u in share) for share in shares] == [150, 140]
    assert [u.path.name for u in shares[0]] == ["f0", "f1", "f2"]


def test_assign_spreads_empty_files() -> None:
    units = [Unit(Path(f"e{i}"), 0) for i in range(4)]
    assert [len(share) for share in assign(units, 2)] == [2, 2]


def test_assign_uses_no_more_workers_than_units() -> None:
    units = [Unit(Path("a"), 5), Unit(Path("b"), 7)]
    assert sorted(len(s) for s in assign(units, 8)) == [1, 1]
    assert assign(units, 1) == [units]
    assert assign([], 4) == [[]]


def test_units_are_the_files_one_process_reads(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/2.json", "b/1.json", "a.json", "c.gz"):
        (tmp_path / name).write_bytes(b"x" * len(name))
    units = units_of([tmp_path, tmp_path / "a.json", tmp_path / "absent"])
    members = [m.display for m in iter_members([tmp_path, tmp_path / "a.json"], DeadLetter())]
    assert [str(u.path) for u in units] == [*members, str(tmp_path / "absent")]
    assert [u.size for u in units] == [len(Path(m).relative_to(tmp_path).as_posix()) for m in members] + [0]


# --- workers that fail -----------------------------------------------------------------------------------


def _with_absent_rules(index: int, options: HuntOptions, outbox: Any) -> None:
    """The real worker, given a rules path that does not exist: `run_hunt` raises inside it."""
    _work(index, replace(options, rules=[Path("/no/such/rules")]), outbox)


def _dies(index: int, options: HuntOptions, outbox: Any) -> None:
    """A worker that ends without a word, as one killed for memory would."""
    os._exit(3)


@pytest.fixture
def two_files(tmp_path: Path) -> HuntOptions:
    """Two inputs and one rule: enough for two workers."""
    for i in (1, 2):
        (tmp_path / f"{i}.json").write_bytes(event_line(i, "C:\\Windows\\System32\\whoami.exe", "whoami") + b"\n")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yml").write_text(
        "title: Whoami\nid: 7a0e3e1c-55b8-4d55-9a3e-3c2e1e8f0a11\nlogsource:\n  category: process_creation\n"
        "  product: windows\ndetection:\n  selection:\n    Image|endswith: '\\whoami.exe'\n"
        "  condition: selection\nlevel: high\n", encoding="utf-8")
    return HuntOptions(paths=[tmp_path / "1.json", tmp_path / "2.json"], rules=[rules], use_cache=False)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_hunt_replaces_the_dead_letter_of_the_last(two_files: HuntOptions, tmp_path: Path, jobs: int) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"not json\n")
    dead = tmp_path / "dead.jsonl"
    options = replace(two_files, paths=[*two_files.paths, bad], dead_letter=dead)
    for _ in range(2):
        run_hunt_parallel(options, jobs, lambda _: None)
        assert [json.loads(line)["file"] for line in dead.read_text().splitlines()] == [str(bad)]


def test_two_workers_hunt_two_files(two_files: HuntOptions) -> None:
    found: list[Detection] = []
    stats = run_hunt_parallel(two_files, 2, found.append)
    assert sorted(d.record or 0 for d in found) == [1, 2]
    assert (stats.events, stats.members, stats.detections, stats.rules_loaded) == (2, 2, 2, 1)


def test_a_worker_error_is_raised_in_the_parent(two_files: HuntOptions) -> None:
    started = time.monotonic()
    with pytest.raises(WorkerError, match=r"hunt worker \d of 2 failed: .*/no/such/rules"):
        run_hunt_parallel(two_files, 2, lambda _: None, worker=_with_absent_rules)
    assert time.monotonic() - started < 60


def test_a_worker_that_dies_is_an_error_not_a_hang(two_files: HuntOptions) -> None:
    started = time.monotonic()
    with pytest.raises(WorkerError, match=r"exited with 3"):
        run_hunt_parallel(two_files, 2, lambda _: None, worker=_dies)
    assert time.monotonic() - started < 60


def _sleeps(index: int, options: HuntOptions, outbox: Any) -> None:
    """A worker that asks to end with its parent, says its pid, then waits far longer than the test."""
    end_with_parent()
    outbox.put(("items", [("a", f"worker {os.getpid()}")]))
    time.sleep(600)


_DRIVER = """
import sys
from pathlib import Path
from tests.cli.test_hunt_jobs import _sleeps
from watchkeeper.hunt import HuntOptions
from watchkeeper.hunt_parallel import run_hunt_parallel
options = HuntOptions(paths=[Path(p) for p in sys.argv[2:]], rules=[Path(sys.argv[1])], use_cache=False)
run_hunt_parallel(options, 2, lambda _: None, announce=lambda line: print(line, flush=True), worker=_sleeps)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc and prctl")
def test_workers_end_when_the_parent_is_killed(two_files: HuntOptions) -> None:
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, str(two_files.rules[0]), *map(str, two_files.paths)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=Path(__file__).parents[2],
    )
    try:
        assert driver.stdout is not None
        workers = [int(driver.stdout.readline().split()[1]) for _ in range(2)]
        assert all(_running(pid) for pid in workers)
        driver.kill()  # SIGKILL: the parent has no chance to end its workers itself
        driver.wait()
        deadline = time.monotonic() + 20
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(pid) for pid in workers)
    finally:
        driver.kill()
