"""Shared fixtures: where the public data sets are, and a skip (never in CI) when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("WATCHKEEPER_DATASETS", ROOT.parent / "shared" / "datasets"))


def need(path: Path) -> Path:
    """Return `path`, or skip the test when the shared data is absent (CI always has it)."""
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing; CI must have ../shared/datasets")
        pytest.skip(f"{path} is absent: set WATCHKEEPER_DATASETS to the shared datasets folder")
    return path


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The shared public data sets (`../shared/datasets` or $WATCHKEEPER_DATASETS)."""
    return need(DATASETS)
