"""`watchkeeper rules` commands."""

from watchkeeper.cli.app import app  # noqa: F401
