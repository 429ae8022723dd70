"""Running lake commands in tests: the CLI in process, and `watchkeeper query` rows as data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from typer.testing import CliRunner

import watchkeeper.cli  # noqa: F401  (registers every command on the app)
from watchkeeper.cli.app import app


def run(*args: str) -> Any:
    """Invoke the CLI; assert success."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def query(lake: Path, sql: str) -> list[dict[str, Any]]:
    """Rows of `watchkeeper query --format json`."""
    return [
        orjson.loads(line)
        for line in run("query", "--lake", str(lake), "--format", "json", sql).stdout.splitlines()
    ]
