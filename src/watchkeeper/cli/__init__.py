"""Command line: one Typer app; each command lives in its own module and registers on import."""

from __future__ import annotations

import sys

from watchkeeper.cli import demo, hunt, lake, rules, rules_update, sources  # noqa: F401  (registers the commands)
from watchkeeper.cli.app import app, fail
from watchkeeper.errors import WatchkeeperError


def main() -> None:
    """Entry point of the `watchkeeper` console script."""
    try:
        app()
    except WatchkeeperError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
