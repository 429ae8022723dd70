"""From engine hits to detections (provenance, native fields), and the summary's rule counts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest

from tests.detect.test_loader import rule_text, write
from watchkeeper.detect.sigma.engine import Hit, SigmaEngine
from watchkeeper.detect.sigma.nodes import CompiledRule, Const, LogSource
from watchkeeper.hunt import HuntOptions, detections_of, run_hunt, without_source
from watchkeeper.sources import load_all


def _rule(rule_id: str) -> CompiledRule:
    return CompiledRule(id=rule_id, title=rule_id, level="high", status="test", tags=(),
                        logsource=LogSource(product="windows"), condition=Const(True), path="r.yml")


def test_events_hold_the_row_values_in_column_order_and_provenance_per_row() -> None:
    batch = pa.RecordBatch.from_pydict({
        "Image": ["a.exe", None, "c.exe", None],
        "TargetUserName": [None, "bob", None, None],
        "CommandLine": ["a -x", "", None, "d"],
        "_source": ["windows.evtx"] * 4,
        "_file": ["one.evtx", "one.evtx", "two.evtx", "three.evtx"],
        "_record": [7, 8, 7, 1],
    })
    first, second = _rule("first"), _rule("second")
    found = list(detections_of(batch, [Hit(first, np.array([1, 2])), Hit(second, np.array([2, 3]))]))
    assert [(d.rule_id, d.source_file, d.record) for d in found] == [
        ("first", "one.evtx", 8), ("first", "two.evtx", 7), ("second", "two.evtx", 7), ("second", "three.evtx", 1),
    ]
    assert [d.event for d in found] == [
        {"TargetUserName": "bob", "CommandLine": ""}, {"Image": "c.exe"}, {"Image": "c.exe"}, {"CommandLine": "d"},
    ]
    assert list(found[0].event) == ["TargetUserName", "CommandLine"]
    assert found[1].event is found[2].event  # one row, one dict, however many rules it matched
    assert found[0].time is None and found[0].host is None


def test_rules_without_source_are_counted_like_the_engine_lists_them() -> None:
    registry = load_all()
    rules = [_rule("a"), replace(_rule("b"), logsource=LogSource(product="nosuch")), _rule("c"),
             replace(_rule("d"), logsource=LogSource(product="linux", service="auth"))]
    engine = SigmaEngine(rules, registry)
    assert without_source(rules, registry) == sum(1 for r in rules if not engine.sources_for(r)) == 1


def test_on_ready_comes_after_the_rules_and_before_any_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHKEEPER_CACHE", str(tmp_path / "cache"))
    rules = write(tmp_path / "rules", {"r.yml": rule_text("Rule")})
    seen: list[str] = []

    def inputs() -> Iterator[pa.RecordBatch]:
        seen.append("input")
        yield from ()

    stats = run_hunt(HuntOptions(paths=[], rules=[rules]), lambda _: None, batches=inputs(),
                     on_ready=lambda: seen.append("ready"))
    assert seen == ["ready", "input"] and stats.rules_loaded == 1


@pytest.mark.parametrize("spellings", [("Image", "image"), ("image", "Image"), ("IMAGE", "Image")])
def test_files_spelling_a_field_two_ways_are_both_hunted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spellings: tuple[str, str]
) -> None:
    # Each file is its own batch, spelled its own way; small batches are coalesced before detection.
    monkeypatch.setenv("WATCHKEEPER_CACHE", str(tmp_path / "cache"))
    rules = write(tmp_path / "rules", {"r.yml": rule_text("Whoami")})
    paths = []
    for i, field in enumerate(spellings, 1):
        record = {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Hostname": f"pc{i}",
                  "RecordNumber": i, field: "C:\\Windows\\System32\\whoami.exe"}
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_bytes(orjson.dumps(record) + b"\n")
    found: list[str | None] = []
    stats = run_hunt(HuntOptions(paths=paths, rules=[rules]), lambda d: found.append(d.host))
    assert sorted(h or "" for h in found) == ["pc1", "pc2"] and stats.events == 2
