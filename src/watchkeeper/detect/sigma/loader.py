"""Load Sigma rules from files and folders, compile them once and cache the result.

The cache is keyed by each file's content and the engine version, so a warm run neither parses
YAML nor imports pySigma. A file whose size, times and inode are those recorded with its key
is not even read again (as Python trusts a `.pyc` by the source's mtime and size). Every file ends
up as compiled rules, filters, or problems with a reason: nothing is skipped silently.
"""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from watchkeeper.detect.sigma.nodes import And, CompiledRule, LogSource, Node, with_facts
from watchkeeper.errors import RuleError, Where

#: Bump when compiled output changes, so old cache entries are never reused.
ENGINE_VERSION = "sigma-arrow-5"
RULE_SUFFIXES = (".yml", ".yaml")
#: The layout of the cache file itself (part of its name).
CACHE_FORMAT = "stamped-1"
#: A file changed less than this long ago may change again within one timestamp tick, unseen by
#: its stamp (git's "racily clean" entries): it is hashed again until it has settled.
SETTLED_NS = 2_000_000_000

#: What identifies a file's version without reading it: size, mtime, ctime, inode.
Stamp = tuple[int, int, int, int]


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
class RuleCache:
    """The cache file: compiled entries by content key, and the stamp and key of each rule path."""

    entries: dict[str, FileEntry] = field(default_factory=dict)
    stamps: dict[str, tuple[Stamp, str]] = field(default_factory=dict)


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
            below: list[tuple[tuple[str, ...], str]] = []
            _walk(str(p), (), below)
            # Ordered like sorted Paths (component by component), as rules always were.
            found.extend(p.joinpath(*parts) for parts, _ in sorted(below))
        elif p.is_file():
            found.append(p)
        else:
            raise RuleError("no such rule file or folder", Where(file=str(p)),
                            hint="check the --rules path")
    return found


def _walk(folder: str, parts: tuple[str, ...], out: list[tuple[tuple[str, ...], str]]) -> None:
    """Rule files below `folder` as (path components, path): what `rglob` finds, without a stat each."""
    try:
        entries = list(os.scandir(folder))
    except PermissionError:
        return  # as rglob: an unreadable folder holds nothing
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _walk(entry.path, (*parts, entry.name), out)
        elif _suffix(entry.name) in RULE_SUFFIXES and entry.is_file():
            out.append(((*parts, entry.name), entry.path))


def _suffix(name: str) -> str:
    """`Path(name).suffix` without building a Path (a leading dot starts no suffix)."""
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


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
    named = repr(sorted(str(p.resolve()) for p in paths)) + CACHE_FORMAT
    cache_file = cache_dir() / f"sigma-{hashlib.sha256(salt + named.encode()).hexdigest()[:20]}.pickle"
    cache = _read_cache(cache_file) if use_cache else RuleCache()
    keys, stamps = _content_keys(files, salt, cache)
    misses = [(f, key, data) for f, key, data in keys if key not in cache.entries]
    if misses:
        from watchkeeper.detect.sigma.parse import compile_file  # imports pySigma: cold path only

        with _collecting():
            for f, key, data in misses:
                cache.entries[key] = compile_file(data if data is not None else f.read_bytes(), str(f), placeholders)
    if use_cache and (misses or stamps != cache.stamps):
        live = {key for _, key, _ in keys}
        _write_cache(cache_file, RuleCache({k: v for k, v in cache.entries.items() if k in live}, stamps))

    rules: list[CompiledRule] = []
    filters: list[CompiledFilter] = []
    problems: list[RuleProblem] = []
    for f, key, _ in keys:
        entry = cache.entries[key]
        # Paths are stored as compiled; re-stamp them in case the same content sits elsewhere.
        rules.extend(r if r.path == str(f) else replace(r, path=str(f)) for r in entry.rules)
        filters.extend(entry.filters)
        problems.extend(entry.problems)
    return RuleSet(apply_filters(rules, filters), filters, problems, len(files), len(misses))


def _content_keys(
    files: list[Path], salt: bytes, cache: RuleCache
) -> tuple[list[tuple[Path, str, bytes | None]], dict[str, tuple[Stamp, str]]]:
    """Each file's content key (and content, if read): hashed unless its stamp is cached with a live key.

    Also the stamps to record: only of files that settled, so a file rewritten twice within one
    timestamp tick (same size) is never mistaken for its older version.
    """
    keys: list[tuple[Path, str, bytes | None]] = []
    stamps: dict[str, tuple[Stamp, str]] = {}
    settled = time.time_ns() - SETTLED_NS
    for f in files:
        path = str(f)
        st = f.stat()
        stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        known = cache.stamps.get(path)
        data = None
        if known is not None and known[0] == stamp and known[1] in cache.entries:
            key = known[1]
        else:
            data = f.read_bytes()
            key = hashlib.sha256(salt + data).hexdigest()
        keys.append((f, key, data))
        if max(st.st_mtime_ns, st.st_ctime_ns) < settled:
            stamps[path] = (stamp, key)
    return keys, stamps


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


@contextmanager
def _collecting() -> Iterator[None]:
    """Collect garbage meanwhile, even if the caller paused collection (compiling leaves cycles)."""
    paused = not gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        if paused:
            gc.disable()


def _read_cache(path: Path) -> RuleCache:
    collecting = gc.isenabled()
    # Unpickling allocates ~100k objects that all live on: collections meanwhile are wasted work.
    gc.disable()
    try:
        with path.open("rb") as fh:
            data = pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError,
            OverflowError, MemoryError, KeyError, IndexError, UnicodeDecodeError):
        return RuleCache()  # a missing, stale or damaged cache only costs a recompile
    finally:
        if collecting:
            gc.enable()
    return data if isinstance(data, RuleCache) else RuleCache()


def _write_cache(path: Path, data: RuleCache) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("wb") as fh:
            pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    except OSError:
        pass  # a read-only home still hunts, only more slowly
