"""`watchkeeper hunt` end to end through the CLI: formats, options, errors and damaged input."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need

SYSMON = "Microsoft-Windows-Sysmon/Operational"
PANACHE = "evtx-attack-samples/AutomatedTestingTools/PanacheSysmon_vs_AtomicRedTeam01.evtx"
EVTX_HEADER, EVTX_CHUNK = 4096, 65536
REQUIRED = ("rule_id", "rule_title", "level", "tags", "time", "host", "source_file", "event")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compiled-rule cache for this module (SigmaHQ's Windows rules compile once)."""
    return tmp_path_factory.mktemp("rule-cache")


def run(args: Sequence[str | Path], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WATCHKEEPER_CACHE": str(cache), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "watchkeeper", *map(str, args)], env=env,
                          capture_output=True, text=True, check=False, timeout=600)


def event_line(record: int, image: str, command_line: str, computer: str = "ws01.corp.local") -> bytes:
    """One Sysmon process creation as `evtx_dump -o jsonl` writes it."""
    return json.dumps({"Event": {
        "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
        "System": {
            "Provider": {"#attributes": {"Name": "Microsoft-Windows-Sysmon",
                                         "Guid": "5770385F-C22A-43E0-BF4C-06F5698FFBD9"}},
            "EventID": 1, "Version": 5, "Level": 4, "Task": 1, "Opcode": 0, "Keywords": "0x8000000000000000",
            "TimeCreated": {"#attributes": {"SystemTime": f"2024-03-01T10:{record % 60:02d}:00.123456Z"}},
            "EventRecordID": record,
            "Execution": {"#attributes": {"ProcessID": 3040, "ThreadID": 4012}},
            "Channel": SYSMON, "Computer": computer, "Security": {"#attributes": {"UserID": "S-1-5-18"}},
        },
        "EventData": {"UtcTime": "2024-03-01 10:00:00.123", "Image": image, "CommandLine": command_line,
                      "ParentImage": "C:\\Windows\\explorer.exe", "User": "CORP\\alice"},
    }}).encode()


def rule(title: str, needle: str, level: str, tags: Sequence[str] = ("attack.discovery", "attack.t1033")) -> str:
    tag_lines = "".join(f"  - {t}\n" for t in tags)
    return (f"title: {title}\nid: {uuid.uuid4()}\nstatus: test\nlogsource:\n  category: process_creation\n"
            f"  product: windows\ndetection:\n  selection:\n    Image|endswith: '\\{needle}.exe'\n"
            f"  condition: selection\nlevel: {level}\ntags:\n{tag_lines}")


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Events (records 11–14), a folder with a high and a low rule, and a second folder with one more."""
    events = tmp_path / "events.json"
    events.write_bytes(b"\n".join([
        event_line(11, "C:\\Windows\\System32\\whoami.exe", "whoami /all"),
        event_line(12, "C:\\Windows\\System32\\net.exe", "net group \"domain admins\" /domain", "dc01.corp.local"),
        event_line(13, "C:\\Windows\\System32\\notepad.exe", "notepad"),
        event_line(14, "C:\\Windows\\System32\\WHOAMI.EXE", "WHOAMI /priv"),
    ]) + b"\n")
    rules_a = tmp_path / "rules-a"
    rules_a.mkdir()
    (rules_a / "whoami.yml").write_text(rule("Whoami run", "whoami", "high"), encoding="utf-8")
    (rules_a / "net.yml").write_text(rule("Net run", "net", "low", ("attack.discovery",)), encoding="utf-8")
    rules_b = tmp_path / "rules-b"
    rules_b.mkdir()
    (rules_b / "notepad.yml").write_text(rule("Notepad run", "notepad", "medium", ()), encoding="utf-8")
    return events, rules_a, rules_b


def read_output(path: Path, fmt: str) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if fmt == "json":
        data = json.loads(text)
        assert isinstance(data, list)
        return data
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        row["event"] = json.loads(row["event"])
        row["tags"] = [t for t in row["tags"].split(";") if t]
    return rows


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_formats_carry_every_required_field(tmp_path: Path, cache: Path, small: tuple[Path, Path, Path],
                                            fmt: str) -> None:
    events, rules_a, _ = small
    out = tmp_path / f"detections.{fmt}"
    proc = run(["hunt", events, "--rules", rules_a, "--format", fmt, "--output", out,
                "--dead-letter", tmp_path / "dl.jsonl"], cache)
    assert proc.returncode == 0, proc.stderr
    rows = read_output(out, fmt)
    for row in rows:
        assert set(REQUIRED) <= set(row), row
        assert row["source_file"] == str(events)
    got = sorted((r["rule_title"], r["level"], int(r["event"]["EventRecordID"]), r["host"]) for r in rows)
    assert got == [("Net run", "low", 12, "dc01.corp.local"), ("Whoami run", "high", 11, "ws01.corp.local"),
                   ("Whoami run", "high", 14, "ws01.corp.local")]
    whoami = next(r for r in rows if int(r["event"]["EventRecordID"]) == 11)
    assert whoami["tags"] == ["attack.discovery", "attack.t1033"]
    assert whoami["time"].startswith("2024-03-01T10:11:00.123456")
    assert whoami["event"]["Image"] == "C:\\Windows\\System32\\whoami.exe"
    assert len({r["rule_id"] for r in rows}) == 2
    assert f"Detections written to {out}" in proc.stdout
    assert not (tmp_path / "dl.jsonl").exists()


def test_min_level_drops_lower_rules(tmp_path: Path, cache: Path, small: tuple[Path, Path, Path]) -> None:
    events, rules_a, _ = small
    out = tmp_path / "d.jsonl"
    proc = run(["hunt", events, "--rules", rules_a, "--min-level", "high", "--output", out, "-q"], cache)
    assert proc.returncode == 0, proc.stderr
    assert sorted((r["rule_title"], r["record"]) for r in read_output(out, "jsonl")) == [
        ("Whoami run", 11), ("Whoami run", 14)]


def test_bad_min_level_is_an_error(tmp_path: Path, cache: Path, small: tuple[Path, Path, Path]) -> None:
    events, rules_a, _ = small
    proc = run(["hunt", events, "--rules", rules_a, "--min-level", "severe", "-q"], cache)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "severe" in proc.stderr


def test_rules_given_twice_loads_both(tmp_path: Path, cache: Path, small: tuple[Path, Path, Path]) -> None:
    events, rules_a, rules_b = small
    out = tmp_path / "d.jsonl"
    proc = run(["hunt", events, "--rules", rules_a, "--rules", rules_b, "--output", out, "-q"], cache)
    assert proc.returncode == 0, proc.stderr
    assert sorted((r["rule_title"], r["record"]) for r in read_output(out, "jsonl")) == [
        ("Net run", 12), ("Notepad run", 13), ("Whoami run", 11), ("Whoami run", 14)]


def test_version(cache: Path) -> None:
    from watchkeeper import __version__

    proc = run(["--version"], cache)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"watchkeeper {__version__}"


@pytest.mark.parametrize("command", [
    ["hunt"], ["rules", "check"], ["rules", "update"], ["demo"], ["ingest"], ["query"], ["lake", "compact"], [],
], ids=lambda c: " ".join(c) or "top")
def test_help_for_every_command(cache: Path, command: list[str]) -> None:
    proc = run([*command, "--help"], cache)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_top_level_help_lists_every_command(cache: Path) -> None:
    out = run(["--help"], cache).stdout
    for name in ("hunt", "rules", "demo", "ingest", "query", "lake"):
        assert f" {name} " in out, name


def _one_error_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0]


def test_absent_rules_path_is_one_error_line(tmp_path: Path, cache: Path, small: tuple[Path, Path, Path]) -> None:
    events, rules_a, _ = small
    missing = tmp_path / "no-such-rules"
    _one_error_line(run(["hunt", events, "--rules", rules_a, "--rules", missing, "-q"], cache), str(missing))


def test_absent_input_path_is_one_error_line(tmp_path: Path, cache: Path,
                                             small: tuple[Path, Path, Path]) -> None:
    _, rules_a, _ = small
    missing = tmp_path / "no-such-logs"
    _one_error_line(run(["hunt", missing, "--rules", rules_a, "-q"], cache), str(missing))


def test_unknown_format_is_one_error_line(tmp_path: Path, cache: Path, small: tuple[Path, Path, Path]) -> None:
    events, rules_a, _ = small
    _one_error_line(run(["hunt", events, "--rules", rules_a, "--format", "xml", "--output", tmp_path / "o",
                         "-q"], cache), "xml")


# --- damaged input -----------------------------------------------------------------------------------


def _zip_with_a_damaged_member(members: dict[str, bytes], damaged: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    damaged_data = bytearray(buf.getvalue())
    info = zipfile.ZipFile(io.BytesIO(buf.getvalue())).getinfo(damaged)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    damaged_data[start] = 0x07  # deflate block header: final block of the reserved (invalid) type 3
    return bytes(damaged_data)


def _dead_letters(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def _pairs(rows: list[dict[str, Any]]) -> set[tuple[str, str, int]]:
    return {(r["rule_id"], Path(r["source_file"]).name, int(r["event"]["EventRecordID"])) for r in rows}


@pytest.fixture(scope="module")
def damaged_hunt(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> dict[str, Any]:
    """One hunt over a folder of damaged inputs and one over the intact originals, same rules."""
    from tests.conftest import DATASETS

    panache = need(DATASETS / PANACHE)
    sigma_windows = need(DATASETS / "sigma" / "rules" / "windows")
    root = tmp_path_factory.mktemp("damaged")
    own_rules = root / "own-rules"
    own_rules.mkdir()
    (own_rules / "whoami.yml").write_text(rule("Whoami run", "whoami", "high"), encoding="utf-8")

    good = [event_line(21, "C:\\Windows\\System32\\whoami.exe", "whoami"),
            event_line(22, "C:\\Windows\\System32\\notepad.exe", "notepad")]
    lines = [event_line(31, "C:\\Windows\\System32\\whoami.exe", "whoami /groups"),
             b'{"Event": {"System": {"EventID": 1, "EventRecordID": 32',           # line 2: cut short
             event_line(33, "C:\\Windows\\System32\\whoami.exe", "whoami /user"),
             b"this line is not JSON at all",                                        # line 4
             event_line(35, "C:\\Windows\\System32\\whoami.exe", "whoami /priv")]

    bad = root / "bad"
    bad.mkdir()
    evtx = panache.read_bytes()
    complete_chunks = 5
    (bad / "truncated.evtx").write_bytes(evtx[: EVTX_HEADER + complete_chunks * EVTX_CHUNK + 20000])
    (bad / "bundle.zip").write_bytes(_zip_with_a_damaged_member(
        {"broken.json": b"\n".join(good * 40) + b"\n", "good.json": b"\n".join(good) + b"\n"}, "broken.json"))
    (bad / "mixed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (bad / "blob.bin").write_bytes(bytes(range(256)) * 8)
    (bad / "empty.json").write_bytes(b"")

    intact = root / "intact"
    intact.mkdir()
    (intact / "truncated.evtx").write_bytes(evtx)
    with zipfile.ZipFile(intact / "bundle.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("good.json", b"\n".join(good) + b"\n")
    (intact / "mixed.jsonl").write_bytes(b"\n".join(lines[0::2]) + b"\n")

    result: dict[str, Any] = {"root": root, "complete_chunks": complete_chunks}
    for name, folder in (("bad", bad), ("intact", intact)):
        out, dead = root / f"{name}.jsonl", root / f"{name}-dead.jsonl"
        proc = run(["hunt", folder, "--rules", sigma_windows, "--rules", own_rules, "--output", out,
                    "--dead-letter", dead], cache)
        assert proc.returncode == 0, proc.stderr[-4000:]
        result[name] = (proc, read_output(out, "jsonl"), _dead_letters(dead))
    return result


def test_damaged_inputs_are_named_on_stderr(damaged_hunt: dict[str, Any]) -> None:
    proc, _, _ = damaged_hunt["bad"]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert "Traceback" not in proc.stderr

    def one(*needles: str) -> None:
        found = [w for w in warnings if all(n in w for n in needles)]
        assert len(found) == 1, (needles, warnings)

    one("truncated.evtx", "truncated EVTX", "5 complete")
    one("bundle.zip!broken.json", "damaged", "invalid compressed data")
    one("mixed.jsonl", "record 2", "line 2", "invalid JSON")
    one("mixed.jsonl", "record 4", "line 4", "invalid JSON")
    one("blob.bin", "not recognised")
    one("empty.json", "empty file")


def test_damaged_member_is_one_dead_letter(damaged_hunt: dict[str, Any]) -> None:
    proc, _, dead = damaged_hunt["bad"]
    assert [d["reason"] for d in dead if d["file"].endswith("bundle.zip!broken.json")] == [
        "archive data damaged, stopped reading here: broken.json: invalid compressed data "
        "(Error -1 Invalid deflate block found)"]
    assert not [line for line in proc.stderr.splitlines() if "broken.json" in line and "empty file" in line]


def test_one_dead_letter_per_damaged_thing(damaged_hunt: dict[str, Any]) -> None:
    _, _, dead = damaged_hunt["bad"]
    by_file: dict[str, list[Any]] = {}
    for entry in dead:
        by_file.setdefault(Path(entry["file"]).name, []).append(entry["record"])
    # The damaged zip member also gets an 'empty file' entry (see test_damaged_member_is_one_dead_letter).
    assert {k: v for k, v in by_file.items() if k != "bundle.zip!broken.json"} == {
        "truncated.evtx": [None], "mixed.jsonl": [2, 4], "blob.bin": [None], "empty.json": [None]}
    assert "bundle.zip!broken.json" in by_file
    mixed = [d for d in dead if d["record"] == 4]
    assert mixed[0]["raw"].rstrip("\r\n") == "this line is not JSON at all"


def test_summary_counts_the_unreadable_records(damaged_hunt: dict[str, Any]) -> None:
    proc, _, dead = damaged_hunt["bad"]
    assert f"unreadable records {len(dead)}" in proc.stdout
    assert "Unreadable records were written to" in proc.stdout
    intact_proc, _, intact_dead = damaged_hunt["intact"]
    assert intact_dead == []
    assert "unreadable records 0" in intact_proc.stdout


def test_detections_around_the_damage_are_kept(damaged_hunt: dict[str, Any]) -> None:
    _, bad_rows, _ = damaged_hunt["bad"]
    _, intact_rows, _ = damaged_hunt["intact"]
    bad, intact = _pairs(bad_rows), _pairs(intact_rows)
    # The truncated EVTX keeps the records of its complete chunks: the intact file's detections up to there.
    evtx_bad = {p for p in bad if p[1] == "truncated.evtx"}
    last = max(p[2] for p in evtx_bad)
    evtx_intact = {p for p in intact if p[1] == "truncated.evtx"}
    assert evtx_bad == {p for p in evtx_intact if p[2] <= last}
    assert len(evtx_bad) >= 10
    assert evtx_bad != evtx_intact  # the missing chunks did hold detections
    # The JSON lines around the bad ones and the good zip member fire as in the intact files.
    assert {(p[1], p[2]) for p in bad if p[1] != "truncated.evtx"} == {
        ("mixed.jsonl", 31), ("mixed.jsonl", 33), ("mixed.jsonl", 35), ("bundle.zip!good.json", 21)}
    assert {(p[1], p[2]) for p in intact if p[1] in ("mixed.jsonl", "bundle.zip!good.json")} == {
        ("mixed.jsonl", 31), ("mixed.jsonl", 33), ("mixed.jsonl", 35), ("bundle.zip!good.json", 21)}


def test_archive_members_are_named_archive_bang_member(damaged_hunt: dict[str, Any]) -> None:
    _, rows, _ = damaged_hunt["bad"]
    root: Path = damaged_hunt["root"]
    members = {r["source_file"] for r in rows if "bundle.zip" in r["source_file"]}
    assert members == {f"{root / 'bad' / 'bundle.zip'}!good.json"}
