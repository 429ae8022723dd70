"""`watchkeeper rules update`: install a SigmaHQ release package where `hunt` finds it."""

from __future__ import annotations

import typer

from watchkeeper.cli.app import console, fail, warn
from watchkeeper.cli.rules import rules_app
from watchkeeper.errors import WatchkeeperError

SHOWN_FAILURES = 20  # the rest are in the manifest; a long list would bury the summary


@rules_app.command("update")
def update(
    source: str = typer.Argument(
        ...,
        metavar="SOURCE",
        help="https:// URL of a SigmaHQ release package (e.g. sigma_all_rules.zip), a local .zip or "
        ".tar.gz archive, or a folder laid out as SigmaHQ's repository.",
    ),
    sha256: str | None = typer.Option(
        None, "--sha256", metavar="HEX", help="Refuse the archive unless its SHA-256 is this."
    ),
) -> None:
    """Verify SigmaHQ's rules and install them as the set `hunt` uses by default."""
    from watchkeeper.rules_install import install_sigmahq  # imports pySigma: only when installing

    try:
        report = install_sigmahq(source, sha256)
    except WatchkeeperError as exc:
        fail(str(exc))
        return
    for failure in report.failures[:SHOWN_FAILURES]:
        warn(f"{failure.file}: {failure.reason}")
    hidden = len(report.failures) - SHOWN_FAILURES
    if hidden > 0:
        warn(f"… and {hidden} more, listed in {report.path / 'manifest.json'}")
    checksum = f", sha256 {report.sha256}" if report.sha256 else ""
    console.print(
        f"Installed {report.rules} rules into {report.path} "
        f"({len(report.failures)} files failed to load and were left out{checksum})",
        soft_wrap=True,
        highlight=False,
    )
