"""SigmaHQ's regression data: each case's rule fires on the case's own EVTX.

`datasets/sigma/_regression_manifest.csv` lists 202 cases (rule id, EVTX path, `match_count`).
One hunt with every SigmaHQ rule (`rules`, `rules-emerging-threats`, `rules-threat-hunting`)
runs over all 202 files at once; each case then checks, from those detections, that its rule
fired on its file at least `match_count` times (at least once when the count is empty).
Zircolite fires all 202, so any miss is a bug.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DATASETS, need
from tests.detect.test_conformance import HuntRun, hunt_cli, member_name, rule_cache_dir

SIGMA = DATASETS / "sigma"
MANIFEST = SIGMA / "_regression_manifest.csv"
RULE_FOLDERS = ("rules", "rules-emerging-threats", "rules-threat-hunting")


@dataclass(frozen=True)
class Case:
    """One regression case of the manifest."""

    rule_id: str
    title: str
    evtx: Path
    match_count: int  # at least this many detections of the rule on the file


def read_cases() -> list[Case]:
    """The manifest's cases (none when the shared data is absent: the tests then skip)."""
    if not MANIFEST.exists():
        return []
    with MANIFEST.open(encoding="utf-8", newline="") as fh:
        return [
            Case(row["rule_id"], row["title"], SIGMA / row["evtx_path"], int(row["match_count"] or 1))
            for row in csv.DictReader(fh)
        ]


CASES = read_cases()


@pytest.fixture(scope="module")
def fired(tmp_path_factory: pytest.TempPathFactory) -> Counter[tuple[str, str]]:
    """(rule id, EVTX file name) → detections, from one hunt over all the cases' files."""
    need(MANIFEST)
    run: HuntRun = hunt_cli(
        [c.evtx for c in CASES],
        [need(SIGMA / f) for f in RULE_FOLDERS],
        tmp_path_factory.mktemp("regression-hunt"),
        rule_cache_dir(tmp_path_factory),
    )
    return Counter((d["rule_id"], member_name(d["source_file"])) for d in run.detections)


def test_manifest_cases_are_distinct() -> None:
    """Each case has its own file, so detections on a file belong to one case."""
    need(MANIFEST)
    assert len(CASES) == 202
    assert len({c.evtx.name for c in CASES}) == len(CASES)
    assert all(c.evtx.exists() for c in CASES)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    CASES or [pytest.param(None, marks=pytest.mark.skip("no shared data"))],
    ids=lambda c: f"{c.rule_id[:8]}-{c.title}" if isinstance(c, Case) else "none",
)
def test_case_fires_its_rule(case: Case, fired: Counter[tuple[str, str]]) -> None:
    """The case's rule fires on its own file at least `match_count` times."""
    got = fired[(case.rule_id, case.evtx.name)]
    assert got >= case.match_count, f"{case.title} ({case.rule_id}) fired {got} times on {case.evtx.name}"
