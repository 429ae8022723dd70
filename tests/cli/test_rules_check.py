"""`watchkeeper rules check`: every rule is accounted for, with a status and a reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import need

GOOD_ID = "3b6e1c0a-8d52-4f4e-9a61-0c2f7e9d4b10"
CORRELATION_ID = "0d2b8b9e-5f1b-4a8e-9d58-2fbb1e6a6e11"
FOOBAR_ID = "8e4a2c6f-1b3d-4e5f-a7b9-c0d1e2f3a4b5"

GOOD = f"""\
title: Whoami run
id: {GOOD_ID}
status: test
logsource:
  category: process_creation
  product: windows
detection:
  selection:
    Image|endswith: '\\whoami.exe'
  condition: selection
level: low
"""
INVALID = """\
title: Missing condition
id: 5b1f8f02-52c4-4ab4-a4c2-8a1b7f5d7c10
logsource:
  product: windows
detection:
  selection:
    Image|endswith: '\\x.exe'
level: high
"""
CORRELATION = f"""\
title: Failed logon
id: 6f3b1c4e-2a1d-4c2e-9b8a-5d7e1f0a9c31
name: failed_logon
status: test
logsource:
  product: windows
  service: security
detection:
  selection:
    EventID: 4625
  condition: selection
level: low
---
title: Many failed logons
id: {CORRELATION_ID}
correlation:
  type: event_count
  rules:
    - failed_logon
  group-by:
    - TargetUserName
  timespan: 5m
  condition:
    gte: 10
level: high
"""
FOOBAR = f"""\
title: Foobar appliance alert
id: {FOOBAR_ID}
status: test
logsource:
  product: foobar
  service: appliance
detection:
  selection:
    alert: critical
  condition: selection
level: high
"""


def run(args: Sequence[str | Path], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WATCHKEEPER_CACHE": str(cache), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "watchkeeper", *map(str, args)], env=env,
                          capture_output=True, text=True, check=False, timeout=600)


def check_json(paths: Sequence[Path], cache: Path, *extra: str) -> tuple[list[dict[str, Any]], str]:
    proc = run(["rules", "check", *paths, "--format", "json", *extra], cache)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = json.loads(proc.stdout)
    assert isinstance(rows, list)
    return rows, proc.stderr


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name, text in {"good.yml": GOOD, "invalid.yml": INVALID, "correlation.yml": CORRELATION,
                       "foobar.yml": FOOBAR}.items():
        (rules / name).write_text(text, encoding="utf-8")
    return rules


def test_each_rule_has_its_status_and_reason(tmp_path: Path, folder: Path) -> None:
    rows, stderr = check_json([folder], tmp_path / "cache")
    by_title = {r["title"]: r for r in rows}
    assert sorted(by_title) == ["Failed logon", "Foobar appliance alert", "Many failed logons",
                                "Missing condition", "Whoami run"]
    assert len(rows) == 5

    good = by_title["Whoami run"]
    assert (good["status"], good["id"]) == ("loaded", GOOD_ID)
    assert "windows.evtx" in good["sources / reason"] and "windows.json" in good["sources / reason"]
    assert by_title["Failed logon"]["status"] == "loaded"

    invalid = by_title["Missing condition"]
    assert invalid["status"] == "invalid"
    assert invalid["logsource / path"] == str(folder / "invalid.yml")
    assert "condition" in invalid["sources / reason"].lower()

    corr = by_title["Many failed logons"]
    assert (corr["status"], corr["id"]) == ("unsupported", CORRELATION_ID)
    assert "correlation" in corr["sources / reason"]

    foobar = by_title["Foobar appliance alert"]
    assert (foobar["status"], foobar["id"]) == ("no-source", FOOBAR_ID)
    assert "product=foobar" in foobar["sources / reason"]

    assert "4 files: 2 loaded, 1 unsupported, 1 invalid, 1 no-source" in " ".join(stderr.split())


@pytest.mark.parametrize(("status", "titles"), [
    ("loaded", ["Failed logon", "Whoami run"]),
    ("invalid", ["Missing condition"]),
    ("unsupported", ["Many failed logons"]),
    ("no-source", ["Foobar appliance alert"]),
])
def test_status_option_selects_rows(tmp_path: Path, folder: Path, status: str, titles: list[str]) -> None:
    rows, _ = check_json([folder], tmp_path / "cache", "--status", status)
    assert sorted(r["title"] for r in rows) == titles


def test_csv_has_the_same_rows(tmp_path: Path, folder: Path) -> None:
    proc = run(["rules", "check", folder, "--format", "csv"], tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "status,id,title,logsource / path,sources / reason"
    assert Counter(line.split(",", 1)[0] for line in lines[1:]) == Counter(
        {"loaded": 2, "invalid": 1, "unsupported": 1, "no-source": 1})


def test_absent_path_is_one_error_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    proc = run(["rules", "check", missing], tmp_path / "cache")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0]


def test_broken_yaml_is_listed_as_invalid(tmp_path: Path, folder: Path) -> None:
    (folder / "broken.yml").write_text("title: Broken\nlogsource: {product: windows\n", encoding="utf-8")
    rows, _ = check_json([folder], tmp_path / "cache")
    assert [r["status"] for r in rows if r["logsource / path"] == str(folder / "broken.yml")] == ["invalid"]


def _rule_documents(root: Path) -> int:
    count = 0
    for path in sorted(root.rglob("*")):
        if path.suffix in (".yml", ".yaml") and path.is_file():
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if isinstance(doc, dict) and doc.get("action") is None:
                    count += 1
    return count


def test_every_sigmahq_windows_rule_is_accounted_for(tmp_path: Path, datasets: Path) -> None:
    root = need(datasets / "sigma" / "rules" / "windows")
    rows, stderr = check_json([root], tmp_path / "cache")
    assert len(rows) == _rule_documents(root)
    statuses = Counter(r["status"] for r in rows)
    assert set(statuses) <= {"loaded", "unsupported", "invalid", "no-source", "filter"}
    assert statuses["loaded"] > 0.95 * len(rows)
    for r in rows:
        assert r["title"], r
        if r["status"] != "loaded":
            assert r["sources / reason"], r
    files = sum(1 for p in root.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
    assert f"{files:,} files:" in stderr
