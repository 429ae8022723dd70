"""The Typer application and what every command shares: consoles and error reporting."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from watchkeeper import __version__

console = Console()
err_console = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="watchkeeper",
    help="Security monitoring and incident response: hunt Sigma detections over logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"watchkeeper {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Watchkeeper: detect, respond, recover."""


def warn(line: str) -> None:
    """Print one warning line on stderr (bad input, unsupported rule …)."""
    err_console.print(f"[yellow]warning:[/yellow] {line}", markup=True, soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    """Print one readable error line and exit."""
    err_console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    sys.exit(code)
