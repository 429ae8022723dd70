"""Which SigmaHQ rules fire on the real logs of each non-Windows source, exactly.

The expectations were read off a run and checked against the data: a change in the set of firing
rules (a new false positive, a lost detection) must be looked at, not waved through.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

CASES = {
    # Stratus techniques: trail deletion (DeleteTrail), EBS snapshot sharing, secrets retrieval
    # (no SigmaHQ rule covers a single GetSecretValue), EC2 user data (the malformed file).
    "cloudtrail-stratus": ("rules/cloud/aws", {
        "AWS CloudTrail Important Change": 2,  # the loose file and its copy inside cloudtrail.zip
        "AWS STS AssumeRole Misuse": 24,
        "AWS Snapshot Backup Exfiltration": 2,
    }),
    "security-datasets/datasets/atomic/aws": ("rules/cloud/aws", {"AWS STS AssumeRole Misuse": 11}),
    "security-datasets/datasets/atomic/linux": ("rules/linux", {
        "Binary Padding - Linux": 1,
        "Overwriting the File with Dev Zero or Null": 1,
    }),
    "zeek-wrccdc/zeek-json": ("rules/network/zeek", {"MITRE BZAR Indicators for Execution": 24}),
    # Benign web traffic and an SSH brute force (visible by query, not by a single-event rule).
    "elastic-examples/apache": ("rules/web", {}),
    "elastic-examples/auth": ("rules/linux", {}),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compile cache for the module's hunts."""
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("dataset", sorted(CASES))
def test_rules_that_fire(datasets: Path, cache: Path, tmp_path: Path, dataset: str) -> None:
    rules, expected = CASES[dataset]
    data = datasets / dataset
    out = tmp_path / "detections.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "watchkeeper", "hunt", str(data), "--rules", str(datasets / "sigma" / rules),
         "--output", str(out), "--dead-letter", str(tmp_path / "dead.jsonl"), "-q"],
        capture_output=True, text=True, env={**os.environ, "WATCHKEEPER_CACHE": str(cache)}, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    fired = Counter(json.loads(line)["rule_title"] for line in out.read_text().splitlines())
    assert dict(fired) == expected
