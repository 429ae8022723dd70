"""`watchkeeper rules update`: install a SigmaHQ release package where `hunt` finds it."""

from watchkeeper.cli.rules import rules_app  # noqa: F401
