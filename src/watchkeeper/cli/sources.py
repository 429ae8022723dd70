"""`watchkeeper sources`: the log formats Watchkeeper reads and the Sigma logsources they answer."""

from __future__ import annotations

import sys

import typer
from rich.table import Table

from watchkeeper.cli.app import app, console


@app.command("sources")
def sources(
    fmt: str = typer.Option("table", "--format", "-f", help="table or markdown."),
) -> None:
    """List every registered source with the Sigma logsources (and conditions) it answers."""
    from watchkeeper.sources import load_all
    from watchkeeper.sources.catalog import logsource_rows, markdown

    registry = load_all()
    if fmt == "markdown":
        sys.stdout.write(markdown(registry))
        return
    table = Table(show_edge=False)
    for header in ("product", "category", "service", "source", "conditions", "renames"):
        table.add_column(header, overflow="fold")
    for row in logsource_rows(registry):
        table.add_row(*row)
    console.print(table)
