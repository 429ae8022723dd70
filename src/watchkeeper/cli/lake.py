"""`watchkeeper ingest`, `watchkeeper query` and `watchkeeper lake compact`: the event lake."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from watchkeeper.cli.app import app, console, fail, warn

if TYPE_CHECKING:
    import pyarrow as pa

# DuckDB, pyarrow.dataset and the lake are imported inside the commands: `watchkeeper hunt` and
# `--help` should not pay for them at start-up.

lake_app = typer.Typer(help="Maintain the event lake.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")

#: Table output shows at most this many rows; csv and json stream everything.
TABLE_ROWS = 200
#: Rows per Arrow batch when streaming csv or json.
STREAM_ROWS = 16 * 1024
#: Dead-lettered files named in the ingest summary.
DEAD_FILES_SHOWN = 10


class Format(StrEnum):
    """Output formats of `watchkeeper query`."""

    table = "table"
    csv = "csv"
    json = "json"


DEADLETTER_NAME = "deadletter.jsonl"
LAKE_OPTION = typer.Option(..., "--lake", help="Lake directory.", file_okay=False)


@app.command()
def ingest(
    paths: list[Path] = typer.Argument(..., help="Files, directories or archives to ingest.", exists=True),
    lake: Path = LAKE_OPTION,
    retention: int | None = typer.Option(
        None, "--retention", min=0, help="Drop partitions (and skip events) older than this many days."
    ),
    dead_letter: Path | None = typer.Option(
        None, "--dead-letter",
        help="Append unreadable records, with the reason, to this JSON-lines file (default: deadletter.jsonl in the lake).",
    ),
    batch_size: int = typer.Option(8192, "--batch-size", min=1, help="Events per batch."),
    mapping: list[str] | None = typer.Option(
        None, "--map", metavar="FIELD=COLUMN",
        help="Read the inputs as CSV / JSON lines with this field mapping (repeatable), e.g. --map time=Date.",
    ),
    map_format: str | None = typer.Option(None, "--map-format", help="With --map: csv or jsonl (default: guessed)."),
    map_source: str = typer.Option("mapped", "--map-source", help="With --map: the source name in the lake."),
    jobs: int = typer.Option(
        1, "--jobs", "-j", min=0,
        help="Worker processes that read the input files (0: one per CPU); one process writes the lake. "
             "The same events and dead letters as one process. Pays where parsing dominates (EVTX), not on "
             "Windows JSON or JSON lines (read in C: one process is faster); workers take ~1 s to start.",
    ),
) -> None:
    """Write events into the lake (Parquet by source and day); ingesting twice adds nothing."""
    from watchkeeper.errors import ConfigError
    from watchkeeper.lake import LakeWriter
    from watchkeeper.sources.autodetect import read_inputs  # the sources are optional for query
    from watchkeeper.sources.deadletter import DeadLetter
    from watchkeeper.sources.mapped import MappedSource

    forced = None
    if mapping:
        pairs = [m.split("=", 1) for m in mapping]
        if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
            raise ConfigError(f"--map takes FIELD=COLUMN, got {mapping!r}")
        try:
            forced = MappedSource(dict(pairs), map_format, map_source, batch_size=batch_size)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    if dead_letter is None:
        dead_letter = lake / DEADLETTER_NAME  # beside the partitions, never read as one
    dead = DeadLetter(dead_letter)
    try:
        with LakeWriter(lake, retention_days=retention) as writer:
            parallel = False
            if jobs != 1:
                from watchkeeper.ingest_parallel import Mapping, ingest_parallel

                spec = Mapping(dict(pairs), map_format, map_source) if mapping else None
                parallel = ingest_parallel(paths, writer, dead, jobs, batch_size, spec)
            if not parallel:
                for batch in read_inputs([str(p) for p in paths], dead, batch_size=batch_size, source=forced):
                    writer.write(batch)
    finally:
        dead.close()
    stats = writer.stats
    table = Table(title=f"ingested into {lake}")
    for name in ("source", "read", "written", "duplicates", "expired"):
        table.add_column(name, justify="left" if name == "source" else "right")
    for source, s in sorted(stats.sources.items()):
        table.add_row(source, f"{s.read:,}", f"{s.written:,}", f"{s.duplicates:,}", f"{s.expired:,}")
    total = [
        sum(getattr(s, k) for s in stats.sources.values())
        for k in ("read", "written", "duplicates", "expired")
    ]
    table.add_row("[bold]total[/bold]", *(f"{v:,}" for v in total))
    console.print(table)
    console.print(
        f"files written {stats.files_written}, compacted {stats.files_compacted}, "
        f"partitions expired {stats.partitions_expired}, leftovers removed {stats.leftovers_removed}, "
        f"dead letters {dead.count}"
    )
    for file, count in dead.by_file.most_common(DEAD_FILES_SHOWN):
        warn(f"{file}: {count} unreadable record(s)" + (f", see {dead_letter}" if dead_letter else ""))
    for file, count in dead.repaired_by_file.most_common(DEAD_FILES_SHOWN):
        warn(f"{file}: {count} record(s) not valid UTF-8, ingested with replacement characters"
             + (f"; original bytes in {dead_letter}" if dead_letter else ""))


def _print_table(reader: pa.RecordBatchReader) -> None:
    rows: list[dict[str, Any]] = []
    for batch in reader:
        rows.extend(batch.slice(0, TABLE_ROWS + 1 - len(rows)).to_pylist())
        if len(rows) > TABLE_ROWS:
            break
    table = Table(*reader.schema.names)
    for row in rows[:TABLE_ROWS]:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(table)
    if len(rows) > TABLE_ROWS:
        warn(f"only the first {TABLE_ROWS} rows are shown; use --format csv or json for all")


def _write_stream(reader: pa.RecordBatchReader, fmt: Format) -> None:
    import orjson
    import pyarrow.csv as pacsv

    out = sys.stdout.buffer
    if fmt is Format.csv:
        with pacsv.CSVWriter(out, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
        return
    for batch in reader:
        # JSON lines: one object per row, streamed; orjson writes datetimes as ISO 8601.
        out.write(b"".join(orjson.dumps(row, default=str) + b"\n" for row in batch.to_pylist()))
    out.flush()


@app.command()
def query(
    sql: str = typer.Argument(
        ..., help="DuckDB SQL over `events` and one view per source (`aws_cloudtrail` …)."
    ),
    lake: Path = LAKE_OPTION,
    fmt: Format = typer.Option(Format.table, "--format", help="table (Rich), csv or json (JSON lines)."),
) -> None:
    """Run SQL over the lake (read-only)."""
    import duckdb
    import pyarrow as pa

    from watchkeeper.lake import Lake

    if not lake.is_dir():
        fail(f"no lake at {lake}")
    con = Lake(lake).connect()
    try:
        relation = con.sql(sql)
        if relation is None:
            return
        reader = relation.to_arrow_reader(STREAM_ROWS)
        if fmt is Format.table:
            _print_table(reader)
        else:
            _write_stream(reader, fmt)
    except (duckdb.Error, pa.ArrowException) as exc:
        fail(f"query failed: {' '.join(str(exc).split())}")
    finally:
        con.close()


@lake_app.command("compact")
def compact_command(
    lake: Path = LAKE_OPTION,
    min_files: int = typer.Option(
        2, "--min-files", min=2, help="Compact partitions with at least this many small files."
    ),
) -> None:
    """Merge each partition's small files into one (ingest does this itself at 8 files)."""

    from watchkeeper.lake import compact, layout
    if not lake.is_dir():
        fail(f"no lake at {lake}")
    merged = 0
    with layout.writer_lock(lake):
        layout.recover(lake)
        for _partition, directory in list(layout.partitions(lake)):
            merged += compact(directory, min_files)
    console.print(f"merged {merged} files")
