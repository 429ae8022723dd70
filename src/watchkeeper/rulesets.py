"""Where rule sets live: the bundled Watchkeeper rules and the installed SigmaHQ release.

`hunt` without `--rules` uses `default_rule_paths()`: the bundled set, plus SigmaHQ's rules when
`watchkeeper rules update` has installed them under `$WATCHKEEPER_HOME/rules/sigmahq`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from watchkeeper.errors import ConfigError, Where

HOME_ENV = "WATCHKEEPER_HOME"
MANIFEST = "manifest.json"
#: SigmaHQ's folders a hunt uses by default. The others (`rules-threat-hunting`, `rules-placeholder`,
#: `rules-compliance`, `rules-dfir`) are installed too but are noisy by design or need configured
#: placeholders, so an analyst names them with `--rules`.
DEFAULT_SIGMAHQ_FOLDERS = ("rules", "rules-emerging-threats")


@dataclass(frozen=True)
class Manifest:
    """What `rules update` recorded about the installed SigmaHQ set."""

    source: str
    sha256: str | None
    rules: int
    failed: int
    installed_at: str


def watchkeeper_home() -> Path:
    """Watchkeeper's data folder: `$WATCHKEEPER_HOME`, else `$XDG_DATA_HOME/watchkeeper`."""
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "watchkeeper"


def bundled_rules_path() -> Path:
    """The folder of the Sigma rules shipped inside the package."""
    # The package is installed as files (wheel or editable), never zipped, so the resource is a
    # real directory that pySigma and the rule cache can walk.
    path = Path(str(files("watchkeeper").joinpath("rules")))
    if not path.is_dir():
        raise ConfigError(
            "the bundled rules are missing from the installed package",
            Where(file=str(path)),
            hint="reinstall watchkeeper",
        )
    return path


def sigmahq_rules_path() -> Path:
    """Where `watchkeeper rules update` installs SigmaHQ's rules (it may not exist yet)."""
    return watchkeeper_home() / "rules" / "sigmahq"


def installed_manifest() -> Manifest | None:
    """The manifest of the installed SigmaHQ set, or None when no set is installed."""
    path = sigmahq_rules_path() / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the rule set manifest: {exc}",
            Where(file=str(path)),
            hint="run `watchkeeper rules update` again",
        ) from exc
    return Manifest(
        source=str(data.get("source", "")),
        sha256=data.get("sha256"),
        rules=int(data.get("rules", 0)),
        failed=int(data.get("failed", 0)),
        installed_at=str(data.get("installed_at", "")),
    )


def default_rule_paths() -> list[Path]:
    """The rule folders `hunt` uses when none is given: bundled, plus SigmaHQ's main folders if installed."""
    paths = [bundled_rules_path()]
    sigmahq = sigmahq_rules_path()
    paths.extend(sigmahq / name for name in DEFAULT_SIGMAHQ_FOLDERS if (sigmahq / name).is_dir())
    return paths
