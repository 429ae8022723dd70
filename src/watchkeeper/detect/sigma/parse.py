"""Parse rule files with pySigma and compile them (the cold path; warm runs use the cache)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.filters import SigmaFilter
from sigma.modifiers import SigmaWideModifier, modifier_mapping
from sigma.policy import SigmaPolicy
from sigma.policy.regex_engine import PythonRegexEngine
from sigma.rule import SigmaDetections, SigmaLogSource, SigmaRule

from watchkeeper.detect.sigma.compile import Unsupported, compile_rule
from watchkeeper.detect.sigma.loader import CompiledFilter, FileEntry, RuleProblem
from watchkeeper.detect.sigma.nodes import LogSource

# pySigma's default policy validates regular expressions with RE2, which has no lookaround or
# backreferences; our evaluator runs those through Python's `re`, so rules using them are valid.
_POLICY = SigmaPolicy(regex_engine=PythonRegexEngine())
# The Sigma specification names `utf16le` as an alias of `wide`; pySigma 2.0 lacks the alias.
modifier_mapping.setdefault("utf16le", SigmaWideModifier)


def compile_file(data: bytes, path: str, placeholders: Mapping[str, Sequence[str]]) -> FileEntry:
    """Compile every rule and filter in one YAML file; problems are collected, never raised."""
    entry = FileEntry()
    try:
        # Files are compiled one at a time (that is what the cache keys on), so a correlation's
        # rule references may live in another file: they are not resolved here.
        collection = SigmaCollection.from_yaml(
            data, collect_errors=True, collect_filters=True, resolve_references=False, policy=_POLICY
        )
    except SigmaError as exc:
        entry.problems.append(RuleProblem(path, f"invalid Sigma: {exc}", "error"))
        return entry
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as exc:
        entry.problems.append(RuleProblem(path, f"invalid YAML: {' '.join(str(exc).split())}", "error"))
        return entry
    for item in [*collection.rules, *getattr(collection, "filters", [])]:
        rid = str(getattr(item, "id", "") or "")
        title = str(getattr(item, "title", "") or "")
        errors = getattr(item, "errors", None)
        if errors:
            entry.problems.append(RuleProblem(path, "; ".join(str(e) for e in errors), "error", rid, title))
            continue
        try:
            if isinstance(item, SigmaCorrelationRule):
                raise Unsupported("correlation rules run in the correlation engine, not in hunt")
            if isinstance(item, SigmaFilter):
                entry.filters.append(_compile_filter(item, path, placeholders))
            elif isinstance(item, SigmaRule):
                entry.rules.append(compile_rule(item, path, placeholders))
            else:
                raise Unsupported(f"{type(item).__name__} is not a detection rule")
        except Unsupported as exc:
            entry.problems.append(RuleProblem(path, str(exc), "unsupported", rid, title))
        except SigmaError as exc:
            entry.problems.append(RuleProblem(path, f"invalid Sigma: {exc}", "error", rid, title))
    return entry


def _compile_filter(flt: SigmaFilter, path: str, placeholders: Mapping[str, Sequence[str]]) -> CompiledFilter:
    # A filter's detection compiles like a rule's: wrap it in a rule of the filter's logsource.
    ls: SigmaLogSource = flt.logsource
    rule = SigmaRule(
        title=flt.title,
        logsource=ls,
        detection=SigmaDetections(detections=flt.filter.detections, condition=flt.filter.condition),
    )
    compiled = compile_rule(rule, path, placeholders)
    refs = flt.filter.rules
    names = None if isinstance(refs, str) else tuple(str(r.reference) for r in refs)
    return CompiledFilter(str(flt.id or path), flt.title, LogSource(ls.product, ls.category, ls.service),
                          names, compiled.condition, path)
