"""`watchkeeper demo` end to end: generate, hunt with the default rules, and find the story."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

import watchkeeper.cli  # noqa: F401  (registers the commands)
from watchkeeper.cli.app import app
from watchkeeper.demo import generate


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private WATCHKEEPER_HOME with no SigmaHQ set: the default rules are the bundled ones."""
    path = tmp_path / "home"
    monkeypatch.setenv("WATCHKEEPER_HOME", str(path))
    return path


def test_demo_finds_the_intrusion_and_nothing_else(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    detections = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    expected = generate(tmp_path / "reference").expected_rules
    fired = Counter(d["rule_title"] for d in detections)
    # Every expected bundled rule fires, and no bundled rule fires on the benign background.
    assert set(fired) == set(expected)
    assert fired["Ransom Note File Created"] == 12
    assert fired["M365 Inbox Rule Forwards Or Redirects Mail"] == 1
    assert fired["Linux Restic Snapshots Forgotten Or Backup Deleted Via Sudo"] == 2
    hosts = {d["rule_title"]: d["host"] for d in detections}
    assert hosts["Volume Shadow Copies Deleted"] == "FS-01.mjn.example"
    assert hosts["Linux Restic Snapshots Forgotten Or Backup Deleted Via Sudo"] == "bk-01"
    assert "✗" not in result.output
    assert result.output.count("✓") == len(expected)
    assert str(out / "detections.jsonl") in result.output.replace("\n", "")


def test_demo_without_out_uses_a_fresh_temporary_folder(home: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # make tempfile re-read TMPDIR
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    made = [p for p in tmp_path.iterdir() if p.name.startswith("watchkeeper-demo-")]
    assert len(made) == 1
    assert (made[0] / "detections.jsonl").stat().st_size > 0
    assert (made[0] / "story.md").is_file()


def test_demo_refuses_a_folder_that_is_not_empty(home: Path, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("analyst notes")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "not empty" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
