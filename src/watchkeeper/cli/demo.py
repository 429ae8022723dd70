"""`watchkeeper demo`: write a synthetic intrusion, hunt it with the default rules, show what was found."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from watchkeeper.cli.app import app, console, fail

DETECTIONS = "detections.jsonl"


@app.command()
def demo(
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder to write into (default: a new temporary folder)."),
    seed: int = typer.Option(2026, "--seed", help="Random seed; the same seed writes the same logs."),
) -> None:
    """Generate a ministry intrusion (Windows, Microsoft 365, Linux logs) and hunt it with the default rules."""
    from watchkeeper.demo import generate
    from watchkeeper.hunt import Detection, HuntOptions, run_hunt
    from watchkeeper.output.summary import render_summary
    from watchkeeper.output.writers import close_writer, open_writer
    from watchkeeper.rulesets import default_rule_paths

    if out is None:
        out = Path(tempfile.mkdtemp(prefix="watchkeeper-demo-"))
    elif out.exists() and any(out.iterdir()):
        fail(f"{out} is not empty; give a new or empty folder")
    scenario = generate(out, seed)
    console.print(f"Wrote {sum(scenario.files.values()):,} events in {len(scenario.files)} files to {scenario.logs}",
                  highlight=False, soft_wrap=True)

    writer = open_writer("jsonl", out / DETECTIONS)
    fired: set[str] = set()

    def sink(detection: Detection) -> None:
        writer.write(detection)
        fired.add(detection.rule_title)

    options = HuntOptions(paths=[scenario.logs], rules=default_rule_paths(),
                          dead_letter=out / "deadletter.jsonl")
    try:
        stats = run_hunt(options, sink)
    finally:
        close_writer(writer)
    render_summary(stats, console)

    console.print("\n[bold]The story and what the bundled rules saw[/bold]")
    for step in scenario.steps:
        marks = ", ".join(f"[green]✓ {r}[/green]" if r in fired else f"[red]✗ {r}[/red]" for r in step.rules)
        console.print(f"{step.time:%H:%M} {step.where}: {step.what}" + (f"\n      {marks}" if marks else ""),
                      soft_wrap=True, highlight=False)
    console.print(f"\nStory: {out / 'story.md'}\nDetections: {out / DETECTIONS}", highlight=False, soft_wrap=True)
