"""`watchkeeper rules …` commands: check what a rule set loads, install SigmaHQ's release."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from watchkeeper.cli.app import app, console, err_console

rules_app = typer.Typer(help="Inspect and install Sigma rule sets.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")


@rules_app.command("check")
def check(
    paths: list[Path] = typer.Argument(..., help="Sigma rule files or folders."),
    status: str | None = typer.Option(
        None, "--status", help="Only rows of this status: loaded, unsupported, invalid, no-source."
    ),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompile instead of using the cache."),
) -> None:
    """Report every rule as loaded, unsupported (with the reason), invalid, or without a matching source."""
    from watchkeeper.detect.sigma.engine import SigmaEngine
    from watchkeeper.detect.sigma.loader import load_rules
    from watchkeeper.sources import load_all

    ruleset = load_rules(paths, use_cache=not no_cache)
    engine = SigmaEngine(ruleset.rules, load_all())
    rows: list[tuple[str, str, str, str, str]] = []
    for rule in ruleset.rules:
        sources = engine.sources_for(rule)
        if sources:
            rows.append(("loaded", rule.id, rule.title, str(rule.logsource), ", ".join(sources)))
        else:
            rows.append(("no-source", rule.id, rule.title, str(rule.logsource),
                         f"no registered source answers logsource {rule.logsource}"))
    for p in ruleset.problems:
        rows.append(("invalid" if p.kind == "error" else "unsupported", p.rule_id, p.title or p.path, p.path,
                     p.reason))
    for f in ruleset.filters:
        rows.append(("filter", f.id, f.title, str(f.logsource), "applied to " + (", ".join(f.rules) if f.rules else "all rules of its logsource")))
    totals = Counter(r[0] for r in rows)
    shown = [r for r in rows if status is None or r[0] == status]
    header = ("status", "id", "title", "logsource / path", "sources / reason")
    if fmt == "json":
        console.print_json(data=[dict(zip(header, r, strict=True)) for r in shown])
    elif fmt == "csv":
        out = csv.writer(sys.stdout)
        out.writerow(header)
        out.writerows(shown)
    else:
        table = Table(show_edge=False)
        for h in header:
            table.add_column(h, overflow="fold")
        for r in shown:
            table.add_row(*r)
        console.print(table)
    summary = ", ".join(f"{totals.get(k, 0):,} {k}" for k in ("loaded", "unsupported", "invalid", "no-source", "filter"))
    err_console.print(f"{ruleset.files:,} files: {summary}")
