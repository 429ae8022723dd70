"""`watchkeeper hunt`: Sigma rules over files, folders and archives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from watchkeeper.cli.app import app, console, err_console, warn
from watchkeeper.detect.levels import parse_level
from watchkeeper.output.writers import close_writer, open_writer

MAX_WARNINGS = 20


@app.command()
def hunt(
    paths: list[Path] = typer.Argument(None, help="Files, folders or archives (.zip, .gz, .tar.gz) to hunt."),
    rules: list[Path] = typer.Option(
        None, "--rules", "-r", help="Sigma rule file or folder; repeatable. Default: bundled + installed SigmaHQ."
    ),
    fmt: str | None = typer.Option(None, "--format", "-f", help="Detections as jsonl (default), json or csv; to stdout without --output."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write detections here (default: none)."),
    min_level: str | None = typer.Option(None, "--min-level", help="Only rules at or above this level."),
    dead_letter: Path | None = typer.Option(
        None, "--dead-letter", help="Where unreadable records go (default: beside --output, or ./watchkeeper-deadletter.jsonl)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompile the rules instead of using the cache."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress, no summary."),
) -> None:
    """Hunt Sigma detections in log files: EVTX, Windows JSON and every other supported format."""
    from watchkeeper.hunt import HuntOptions, run_hunt
    from watchkeeper.output.summary import render_summary
    from watchkeeper.rulesets import default_rule_paths

    if not paths:
        raise typer.BadParameter("give at least one file or folder to hunt", param_hint="PATHS")
    level = parse_level(min_level) if min_level else None
    rule_paths = list(rules) if rules else default_rule_paths()
    if dead_letter is None:
        dead_letter = (output.with_name(output.name + ".deadletter.jsonl") if output
                       else Path("watchkeeper-deadletter.jsonl"))
    writer = open_writer(fmt or "jsonl", output) if output or fmt else None
    report: Console = err_console if writer is not None and output is None else console
    shown = 0
    suppressed = 0

    def announce(line: str) -> None:
        nonlocal shown, suppressed
        if shown < MAX_WARNINGS:
            warn(line)
            shown += 1
        else:
            suppressed += 1

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=err_console, transient=True, disable=quiet)
    task = progress.add_task("loading rules", total=None)
    members = 0

    def on_member(member: Any, source: str) -> None:
        nonlocal members
        members += 1
        progress.update(task, description=f"{members:,} files · {source} · {getattr(member, 'display', member)}"[:100])

    options = HuntOptions(paths=list(paths), rules=rule_paths, min_level=level, dead_letter=dead_letter,
                          use_cache=not no_cache)
    try:
        with progress:
            stats = run_hunt(options, writer.write if writer else _discard, on_member=on_member, announce=announce)
    finally:
        if writer is not None:
            close_writer(writer)
    if suppressed:
        warn(f"… and {suppressed:,} more unreadable records: see {dead_letter}")
    if not quiet:
        render_summary(stats, report)
        if stats.dead_letters:
            report.print(f"Unreadable records were written to {dead_letter}")
        if output is not None:
            report.print(f"Detections written to {output} ({fmt or 'jsonl'})")


def _discard(_: object) -> None:
    return None
