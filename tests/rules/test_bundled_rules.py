"""The bundled Sigma rules: all load with pySigma, are unique, complete and tagged with ATT&CK."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from sigma.collection import SigmaCollection
from sigma.rule import SigmaRule

from watchkeeper.detect.sigma.compile import compile_rule
from watchkeeper.rulesets import bundled_rules_path

REQUIRED = ("title", "id", "status", "description", "author", "date", "tags", "logsource", "detection",
            "falsepositives", "level")
TECHNIQUE = re.compile(r"^attack\.t\d{4}(\.\d{3})?$")
TACTICS = {"reconnaissance", "resource-development", "initial-access", "execution", "persistence",
           "privilege-escalation", "stealth", "defense-impairment", "credential-access", "discovery",
           "lateral-movement", "collection", "command-and-control", "exfiltration", "impact"}


def _files() -> list[Path]:
    return sorted(bundled_rules_path().rglob("*.yml"))


@pytest.fixture(scope="module")
def collection() -> SigmaCollection:
    """Every bundled rule, loaded the way a hunt loads them."""
    return SigmaCollection.load_ruleset([bundled_rules_path()], collect_errors=True)


def test_every_rule_loads_without_error(collection: SigmaCollection) -> None:
    assert 12 <= len(collection.rules) <= 30
    assert len(collection.rules) == len(_files())
    assert [(r.title, r.errors) for r in collection.rules if r.errors] == []
    assert all(isinstance(r, SigmaRule) for r in collection.rules)


def test_every_rule_compiles_for_the_engine(collection: SigmaCollection) -> None:
    compiled = [compile_rule(r, str(r.source), {}) for r in collection.rules if isinstance(r, SigmaRule)]
    assert len(compiled) == len(collection.rules)


def test_ids_and_titles_are_unique(collection: SigmaCollection) -> None:
    ids = [str(r.id) for r in collection.rules]
    titles = [r.title.lower() for r in collection.rules]
    assert len(set(ids)) == len(ids)
    assert len(set(titles)) == len(titles)


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.stem)
def test_rule_is_complete(path: Path) -> None:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert [k for k in REQUIRED if not doc.get(k)] == []
    assert doc["status"] == "experimental"
    assert doc["author"] == "Watchkeeper"
    assert doc["level"] in {"low", "medium", "high", "critical"}
    assert "\n" not in doc["description"].strip()
    assert path.stem.startswith("wk_")
    tags = doc["tags"]
    assert any(TECHNIQUE.match(t) for t in tags), tags
    assert any(t.removeprefix("attack.") in TACTICS for t in tags), tags
    assert all(TECHNIQUE.match(t) or t.removeprefix("attack.") in TACTICS for t in tags), tags
    assert doc["logsource"].get("product") in {"windows", "linux", "m365", "aws"}
