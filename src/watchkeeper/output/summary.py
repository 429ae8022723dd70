"""The hunt summary on the terminal: what was read, what fired, where, and how bad."""

from __future__ import annotations

from collections import Counter
from typing import TypeVar

from rich.console import Console
from rich.table import Table

from watchkeeper.detect.levels import LEVELS
from watchkeeper.hunt import HuntStats

K = TypeVar("K", str, tuple[str, str, str])

_LEVEL_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan",
                "informational": "dim"}


def _top(counts: Counter[K], n: int | None = None) -> list[tuple[K, int]]:
    """The `n` largest counts; ties by key, so the table is the same however the counts were gathered."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]


def render_summary(stats: HuntStats, console: Console, top: int = 10) -> None:
    """Print the hunt summary tables."""
    rate = stats.events / stats.seconds if stats.seconds else 0.0
    unsupported = sum(1 for p in stats.problems if p.kind == "unsupported")
    invalid = sum(1 for p in stats.problems if p.kind == "error")
    origin = f" from {stats.members:,} files" if stats.members else ""
    console.print(
        f"[bold]Events read[/bold] {stats.events:,}{origin} in {stats.seconds:.2f} s "
        f"({rate:,.0f} events/s); [bold]unreadable records[/bold] {stats.dead_letters:,}"
    )
    console.print(
        f"[bold]Rules[/bold] {stats.rules_loaded:,} loaded, {unsupported} unsupported, {invalid} invalid, "
        f"{stats.rules_without_source} without a matching source"
        + (f", {stats.rules_skipped_level} below the level floor" if stats.rules_skipped_level else "")
    )
    levels = Table(title="Detections by level", show_edge=False)
    for level in reversed(LEVELS):
        levels.add_column(level, justify="right", style=_LEVEL_STYLE[level])
    levels.add_row(*(f"{stats.by_level.get(level, 0):,}" for level in reversed(LEVELS)))
    console.print(levels)
    console.print(
        f"[bold]{stats.detections:,}[/bold] detections of {len(stats.by_rule):,} rules "
        f"on {len(stats.matched_events):,} events"
    )
    if stats.by_rule:
        rules = Table(title=f"Top {top} rules", show_edge=False)
        rules.add_column("count", justify="right")
        rules.add_column("level")
        rules.add_column("rule")
        for (_, title, level), n in _top(stats.by_rule, top):
            rules.add_row(f"{n:,}", f"[{_LEVEL_STYLE.get(level, '')}]{level}", title)
        console.print(rules)
    if stats.by_host:
        hosts = Table(title=f"Top {top} hosts", show_edge=False)
        hosts.add_column("detections", justify="right")
        hosts.add_column("host")
        for host, n in _top(stats.by_host, top):
            hosts.add_row(f"{n:,}", host)
        console.print(hosts)
    if stats.by_tactic:
        tactics = Table(title="ATT&CK tactics", show_edge=False)
        tactics.add_column("detections", justify="right")
        tactics.add_column("tactic")
        for tactic, n in _top(stats.by_tactic):
            tactics.add_row(f"{n:,}", tactic)
        console.print(tactics)
