"""Command line: one Typer app; each command lives in its own module and registers on import."""

from __future__ import annotations

import gc
import sys

from watchkeeper.cli import demo, hunt, lake, rules, rules_update, sources  # noqa: F401  (registers the commands)
from watchkeeper.cli.app import app, fail
from watchkeeper.errors import WatchkeeperError
from watchkeeper.runtime import configure_process


def main() -> None:
    """Entry point of the `watchkeeper` console script."""
    configure_process()
    try:
        app()
    except WatchkeeperError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        # The process ends here. Frozen, the objects still alive (compiled rules, caches) are left
        # out of the interpreter's exit-time collection, which otherwise costs ~0.15 s per run.
        # Not once DuckDB is loaded: its nanobind types must be collected at exit, or nanobind
        # prints a wall of "leaked type" warnings (duckdb 2.x); lake commands pay the 0.15 s.
        if "duckdb" not in sys.modules:
            gc.freeze()
