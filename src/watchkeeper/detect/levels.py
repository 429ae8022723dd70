"""Sigma severity levels and ATT&CK tactic names, shared by hunting, summaries and filters."""

from __future__ import annotations

from watchkeeper.errors import ConfigError

LEVELS = ("informational", "low", "medium", "high", "critical")

#: ATT&CK enterprise tactics as Sigma tags spell them (`attack.defense-evasion`), with the
#: v18 split of defense evasion into `stealth` and `defense-impairment` that SigmaHQ now uses.
TACTICS = (
    "reconnaissance", "resource-development", "initial-access", "execution", "persistence",
    "privilege-escalation", "defense-evasion", "stealth", "defense-impairment", "credential-access",
    "discovery", "lateral-movement", "collection", "command-and-control", "exfiltration", "impact",
)


def level_rank(level: str) -> int:
    """Position of a level in LEVELS; unknown levels rank as informational."""
    try:
        return LEVELS.index(level.lower())
    except ValueError:
        return 0


def parse_level(level: str) -> str:
    """Validate a level given by a user."""
    if level.lower() not in LEVELS:
        raise ConfigError(f"unknown level {level!r}", hint=f"use one of {', '.join(LEVELS)}")
    return level.lower()


def tactics_of(tags: tuple[str, ...]) -> list[str]:
    """The ATT&CK tactics named in a rule's tags."""
    out = []
    for tag in tags:
        name = tag.lower().removeprefix("attack.").replace("_", "-")
        if tag.lower().startswith("attack.") and name in TACTICS:
            out.append(name)
    return out
