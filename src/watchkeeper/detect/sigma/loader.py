"""Load Sigma rules from files and folders, compile them once and cache the result.

The cache is keyed by each file's content and the engine version, so a warm run neither parses
YAML nor imports pySigma. Every file ends up as compiled rules, filters, or problems with a
reason: nothing is skipped silently.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from watchkeeper.detect.sigma.nodes import And, CompiledRule, LogSource, Node, with_facts
from watchkeeper.errors import RuleError, Where

#: Bump when compiled output changes, so old cache entries are never reused.
ENGINE_VERSION = "sigma-arrow-5"
RULE_SUFFIXES = (".yml", ".yaml")


@dataclass(frozen=True)
class CompiledFilter:
    """A Sigma filter (meta-rule): its condition is added to the rules it names (`rule and filter`)."""

    id: str
    title: str
    logsource: LogSource
    rules: tuple[str, ...] | None  # rule ids or names; None means every rule of the logsource
    condition: Node
    path: str

    def applies_to(self, rule: CompiledRule) -> bool:
        """Whether this filter narrows `rule` (same logsource attributes, and named or `any`)."""
        for want, have in ((self.logsource.product, rule.logsource.product),
                           (self.logsource.category, rule.logsource.category),
                           (self.logsource.service, rule.logsource.service)):
            if want is not None and (have or "").lower() != want.lower():
                return False
        return self.rules is None or bool({rule.id, rule.title, rule.name} & set(self.rules))


@dataclass(frozen=True)
class RuleProblem:
    """A rule (or file) that will not run, and why."""

    path: str
    reason: str
    kind: str  # "error" (invalid) or "unsupported" (valid Sigma this engine does not run)
    rule_id: str = ""
    title: str = ""


@dataclass
class FileEntry:
    """What one rule file compiles to."""

    rules: list[CompiledRule] = field(default_factory=list)
    filters: list[CompiledFilter] = field(default_factory=list)
    problems: list[RuleProblem] = field(default_factory=list)


@dataclass
class RuleSet:
    """The rules loaded from some paths, with filters applied, and the problems met on the way."""

    rules: list[CompiledRule]
    filters: list[CompiledFilter]
    problems: list[RuleProblem]
    files: int
    compiled: int  # how many files were compiled on this run (cache misses)


def rule_files(paths: Iterable[Path]) -> list[Path]:
    """Every rule file under the given files and folders, in a stable order."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*") if q.suffix in RULE_SUFFIXES and q.is_file()))
        elif p.is_file():
            found.append(p)
        else:
            raise RuleError("no such rule file or folder", Where(file=str(p)),
                            hint="check the --rules path")
    return found


def cache_dir() -> Path:
    """Where compiled rules are cached (`$WATCHKEEPER_CACHE` or the XDG cache folder)."""
    env = os.environ.get("WATCHKEEPER_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "watchkeeper"


def load_rules(
    paths: Sequence[Path],
    placeholders: Mapping[str, Sequence[str]] | None = None,
    use_cache: bool = True,
) -> RuleSet:
    """Load, compile (or fetch from the cache) and filter every rule under `paths`."""
    placeholders = dict(placeholders or {})
    files = rule_files(paths)
    salt = (ENGINE_VERSION + repr(sorted((k, tuple(v)) for k, v in placeholders.items()))).encode()
    keys: list[tuple[Path, bytes, str]] = []
    for f in files:
        data = f.read_bytes()
        keys.append((f, data, hashlib.sha256(salt + data).hexdigest()))

    cache_file = cache_dir() / f"sigma-{hashlib.sha256(salt + repr(sorted(str(p.resolve()) for p in paths)).encode()).hexdigest()[:20]}.pickle"
    cache: dict[str, FileEntry] = _read_cache(cache_file) if use_cache else {}
    misses = [(f, data, key) for f, data, key in keys if key not in cache]
    if misses:
        from watchkeeper.detect.sigma.parse import compile_file  # imports pySigma: cold path only

        for f, data, key in misses:
            cache[key] = compile_file(data, str(f), placeholders)
        if use_cache:
            live = {key for _, _, key in keys}
            _write_cache(cache_file, {k: v for k, v in cache.items() if k in live})

    rules: list[CompiledRule] = []
    filters: list[CompiledFilter] = []
    problems: list[RuleProblem] = []
    for f, _, key in keys:
        entry = cache[key]
        # Paths are stored as compiled; re-stamp them in case the same content sits elsewhere.
        rules.extend(r if r.path == str(f) else replace(r, path=str(f)) for r in entry.rules)
        filters.extend(entry.filters)
        problems.extend(entry.problems)
    return RuleSet(apply_filters(rules, filters), filters, problems, len(files), len(misses))


def apply_filters(rules: list[CompiledRule], filters: list[CompiledFilter]) -> list[CompiledRule]:
    """Narrow each rule by the filters that apply to it: `rule and filter`.

    As in the Sigma filter specification and pySigma, a filter's condition says which events to
    keep, so filters are written `condition: not selection`.
    """
    if not filters:
        return rules
    out = []
    for rule in rules:
        cond = rule.condition
        for flt in filters:
            if flt.applies_to(rule):
                cond = And((cond, flt.condition))
        out.append(rule if cond is rule.condition else with_facts(replace(rule, condition=cond)))
    return out


def _read_cache(path: Path) -> dict[str, FileEntry]:
    try:
        with path.open("rb") as fh:
            data = pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError,
            OverflowError, MemoryError, KeyError, IndexError, UnicodeDecodeError):
        return {}  # a missing, stale or damaged cache only costs a recompile
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict[str, FileEntry]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("wb") as fh:
            pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    except OSError:
        pass  # a read-only home still hunts, only more slowly
