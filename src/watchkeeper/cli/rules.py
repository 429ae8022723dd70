"""`watchkeeper rules …` commands: check what a rule set loads, install SigmaHQ's release."""

from __future__ import annotations

import typer

from watchkeeper.cli.app import app

rules_app = typer.Typer(help="Inspect and install Sigma rule sets.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
