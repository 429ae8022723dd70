"""The demo scenario generator: deterministic, realistic in shape, and carrying the whole story."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from watchkeeper.demo import Scenario, generate
from watchkeeper.rulesets import bundled_rules_path


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """The default scenario, written once for the module."""
    return generate(tmp_path_factory.mktemp("demo"))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, scenario: Scenario) -> None:
    again = generate(tmp_path / "again")
    assert _tree(again.root) == _tree(scenario.root)
    other = generate(tmp_path / "other", seed=7)
    assert _tree(other.root).keys() == _tree(scenario.root).keys()
    assert _tree(other.root) != _tree(scenario.root)


def test_files_are_written_as_reported(scenario: Scenario) -> None:
    on_disk = {p.relative_to(scenario.logs).as_posix() for p in scenario.logs.rglob("*") if p.is_file()}
    assert on_disk == set(scenario.files)
    assert {"m365/unified_audit_log.jsonl", "linux/bk-01/auth.log", "windows/FS-01_sysmon.jsonl",
            "windows/FS-01_security.jsonl", "windows/WS-FIN-014_sysmon.jsonl"} <= on_disk
    assert 400 <= sum(scenario.files.values()) <= 2000  # a few hundred benign events around the attack
    assert (scenario.root / "story.md").read_text().count("\n| ") == len(scenario.steps) + 1


def test_windows_records_have_the_evtx_dump_shape_in_order(scenario: Scenario) -> None:
    for name in (n for n in scenario.files if n.startswith("windows/")):
        records = _lines(scenario.logs / name)
        assert len(records) == scenario.files[name]
        ids, times = [], []
        for record in records:
            event = record["Event"]
            assert isinstance(event, dict)
            system = event["System"]
            assert set(system) >= {"Provider", "EventID", "TimeCreated", "EventRecordID", "Channel", "Computer"}
            assert system["Computer"].endswith(".mjn.example")
            assert "EventData" in event or "UserData" in event
            ids.append(system["EventRecordID"])
            times.append(system["TimeCreated"]["#attributes"]["SystemTime"])
        assert ids == list(range(ids[0], ids[0] + len(ids))), name
        assert times == sorted(times), name
        day = datetime(2026, 3, 10, tzinfo=UTC).strftime("%Y-%m-%d")
        assert all(t.startswith(day) for t in times), name


def test_the_attack_is_in_the_logs(scenario: Scenario) -> None:
    sysmon = (scenario.logs / "windows/FS-01_sysmon.jsonl").read_text()
    assert "vssadmin.exe delete shadows /all /quiet" in sysmon
    assert sysmon.count("HOW_TO_RESTORE_FILES.txt") == 12
    ws = (scenario.logs / "windows/WS-FIN-014_sysmon.jsonl").read_text()
    assert "comsvcs.dll, MiniDump" in ws and "-Enc " in ws
    security = _lines(scenario.logs / "windows/FS-01_security.jsonl")
    assert [r["Event"]["System"]["EventID"] for r in security].count(1102) == 1  # type: ignore[index]
    ual = _lines(scenario.logs / "m365/unified_audit_log.jsonl")
    rules = [r for r in ual if r["Operation"] == "New-InboxRule"]
    assert len(rules) == 2  # the intruder's, and a benign one that must not alert
    assert any("ForwardTo" in json.dumps(r["Parameters"]) for r in rules)
    auth = (scenario.logs / "linux/bk-01/auth.log").read_text().splitlines()
    assert sum("Failed password" in line for line in auth) == 44
    assert any("COMMAND=/usr/bin/restic -r /srv/backup/restic forget" in line for line in auth)
    assert all(line.startswith("Mar 10 ") for line in auth)


def test_expected_rules_are_bundled_rule_titles(scenario: Scenario) -> None:
    titles = {yaml.safe_load(p.read_text())["title"] for p in bundled_rules_path().rglob("*.yml")}
    assert len(scenario.expected_rules) >= 8
    assert set(scenario.expected_rules) <= titles
    assert [s.time for s in scenario.steps] == sorted(s.time for s in scenario.steps)
