"""`watchkeeper hunt`: Sigma rules over files, folders and archives."""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from watchkeeper.cli.app import app, console, err_console, warn
from watchkeeper.detect.levels import parse_level
from watchkeeper.errors import ConfigError, InputError, Where
from watchkeeper.output.writers import close_writer, open_writer
from watchkeeper.runtime import settle_heap

MAX_WARNINGS = 20


@app.command()
def hunt(
    # `parser=Path`: typer would otherwise build a pydantic validator per path given (~50 ms for 277).
    paths: list[Path] | None = typer.Argument(
        None, parser=Path, help="Files, folders or archives (.zip, .gz, .tar.gz) to hunt."
    ),
    rules: list[Path] = typer.Option(
        None, "--rules", "-r", parser=Path,
        help="Sigma rule file or folder; repeatable. Default: bundled + installed SigmaHQ.",
    ),
    fmt: str | None = typer.Option(None, "--format", "-f", help="Detections as jsonl (default), json or csv; to stdout without --output."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write detections here (default: none)."),
    min_level: str | None = typer.Option(None, "--min-level", help="Only rules at or above this level."),
    dead_letter: Path | None = typer.Option(
        None, "--dead-letter", help="Where unreadable records go (default: beside --output, or ./watchkeeper-deadletter.jsonl)."
    ),
    lake: Path | None = typer.Option(None, "--lake", help="Hunt the events of this lake instead of files."),
    since: str | None = typer.Option(None, "--since", help="With --lake: events at or after this time (ISO 8601, UTC)."),
    until: str | None = typer.Option(None, "--until", help="With --lake: events before this time (ISO 8601, UTC)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompile the rules instead of using the cache."),
    jobs: int = typer.Option(
        1, "--jobs", "-j", min=0,
        help="Worker processes the input files are split across (0: one per CPU). Detections arrive in "
             "file order per worker, interleaved; the summary is the same. Each worker is a whole process "
             "(up to ~300 MB on large inputs). Not with --lake.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress, no summary."),
) -> None:
    """Hunt Sigma detections in log files: EVTX, Windows JSON and every other supported format."""
    from watchkeeper.hunt import HuntOptions, run_hunt
    from watchkeeper.output.summary import render_summary
    from watchkeeper.rulesets import default_rule_paths

    if not paths and lake is None:
        raise typer.BadParameter("give at least one file or folder to hunt, or --lake", param_hint="PATHS")
    if paths and lake is not None:
        raise typer.BadParameter("hunt either files or a lake, not both", param_hint="--lake")
    if jobs != 1 and lake is not None:
        raise typer.BadParameter("a lake is hunted in one process: leave out --jobs", param_hint="--jobs")
    if (since or until) and lake is None:
        raise typer.BadParameter("--since and --until select events of a lake", param_hint="--lake")
    for path in paths or []:
        if not path.exists():
            raise InputError("no such file or folder", Where(file=str(path)), hint="check the path to hunt")
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

    # Transient, it shows nothing off a terminal: there its refresh thread would only take turns
    # with the hunt for the interpreter.
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=err_console, transient=True, disable=quiet or not err_console.is_terminal)
    task = progress.add_task("loading rules", total=None)
    members = 0

    def on_member(member: Any, source: str | None) -> None:
        nonlocal members
        members += 1
        progress.update(task, description=f"{members:,} files · {source} · {getattr(member, 'display', member)}"[:100])

    batches = None
    if lake is not None:
        from watchkeeper.lake import Lake

        if not lake.is_dir():
            raise ConfigError(f"no lake at {lake}", hint="create one with `watchkeeper ingest PATH --lake DIR`")
        batches = Lake(lake).scan(parse_time(since, "--since"), parse_time(until, "--until"))
    options = HuntOptions(paths=list(paths or []), rules=rule_paths, min_level=level, dead_letter=dead_letter,
                          use_cache=not no_cache)
    # No collection while the rules load: see `settle_heap`.
    thresholds = gc.get_threshold()
    gc.disable()
    try:
        with progress:
            sink = writer.write if writer else _discard
            if jobs == 1:
                stats = run_hunt(options, sink, on_member=on_member, announce=announce, batches=batches,
                                 on_ready=settle_heap)
            else:
                from watchkeeper.hunt_parallel import run_hunt_parallel

                stats = run_hunt_parallel(options, jobs, sink, on_member=on_member, announce=announce,
                                          on_ready=settle_heap)
    finally:
        gc.set_threshold(*thresholds)
        gc.enable()
        if writer is not None:
            close_writer(writer)
    if suppressed:
        warn(f"… and {suppressed:,} more unreadable records: see {dead_letter}")
    if not quiet:
        render_summary(stats, report)
        if stats.dead_letters:
            report.print(f"Unreadable records were written to {dead_letter}")
        if stats.repaired:
            report.print(f"{stats.repaired:,} record(s) not valid UTF-8 were read with replacement characters; "
                         f"their original bytes are in {dead_letter}")
        if output is not None:
            report.print(f"Detections written to {output} ({fmt or 'jsonl'})")


def _discard(_: object) -> None:
    return None


def parse_time(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or time from the command line; without an offset it is UTC."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"{option} {text!r} is not an ISO 8601 time", hint="e.g. 2026-11-23T08:00:00Z") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
