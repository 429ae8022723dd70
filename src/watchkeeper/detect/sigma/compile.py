"""Compile pySigma's parsed rules into Watchkeeper's condition nodes.

pySigma does the hard part of Sigma (YAML, modifiers such as base64offset, windash, wide and
expand, condition parsing); this module turns its value types into `nodes.Match` leaves and
simplifies the tree so evaluators share work across rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionItem,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaType,
    SpecialChars,
)

from watchkeeper.detect.sigma.nodes import (
    And,
    CompiledRule,
    Const,
    LogSource,
    Match,
    Node,
    Not,
    Op,
    Or,
    with_facts,
)

_COMPARE = {
    CompareOperators.LT: Op.LT,
    CompareOperators.LTE: Op.LTE,
    CompareOperators.GT: Op.GT,
    CompareOperators.GTE: Op.GTE,
}
_REGEX_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: "i",
    SigmaRegularExpressionFlag.MULTILINE: "m",
    SigmaRegularExpressionFlag.DOTALL: "s",
}
# Leaves whose value lists can be merged into one leaf when OR-ed on the same field.
_MERGEABLE = {Op.EQ, Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH, Op.GLOB, Op.REGEX, Op.CIDR}


class Unsupported(Exception):
    """A rule uses a Sigma feature this engine does not evaluate; the message says which."""


def compile_rule(rule: SigmaRule, path: str, placeholders: Mapping[str, Sequence[str]]) -> CompiledRule:
    """Compile one parsed rule; raises `Unsupported` with a reason, or pySigma's `SigmaError`."""
    trees = [cond.parsed for cond in rule.detection.parsed_condition]
    node = simplify(Or(tuple(_node(t, placeholders) for t in trees)))
    ls = rule.logsource
    return with_facts(CompiledRule(
        id=str(rule.id) if rule.id else path,
        title=rule.title or path,
        level=(rule.level.name.lower() if rule.level else "informational"),
        status=(rule.status.name.lower() if rule.status else ""),
        tags=tuple(f"{t.namespace}.{t.name}" for t in rule.tags or ()),
        logsource=LogSource(ls.product, ls.category, ls.service),
        condition=node,
        path=path,
        description=rule.description or "",
        falsepositives=tuple(str(f) for f in rule.falsepositives or ()),
        name=str(getattr(rule, "name", None) or ""),
    ))


def _node(item: ConditionItem | object, ph: Mapping[str, Sequence[str]]) -> Node:
    if isinstance(item, ConditionAND):
        return And(tuple(_node(a, ph) for a in item.args))
    if isinstance(item, ConditionOR):
        return Or(tuple(_node(a, ph) for a in item.args))
    if isinstance(item, ConditionNOT):
        return Not(_node(item.args[0], ph))
    if isinstance(item, ConditionFieldEqualsValueExpression):
        return _leaf(item.field, item.value, ph)
    if isinstance(item, ConditionValueExpression):
        return _leaf(None, item.value, ph)
    raise Unsupported(f"condition element {type(item).__name__} is not supported")


def _leaf(field: str | None, value: SigmaType, ph: Mapping[str, Sequence[str]]) -> Node:
    if isinstance(value, SigmaExpansion):
        return Or(tuple(_leaf(field, v, ph) for v in value.values))
    if isinstance(value, SigmaString):
        cased = isinstance(value, SigmaCasedString)
        if value.contains_placeholder():
            return Or(tuple(_string(field, s, cased) for s in _expand(value, ph)))
        return _string(field, value, cased)
    if isinstance(value, SigmaNull):
        return Match(field, Op.NULL, ())
    if isinstance(value, SigmaBool):
        return Match(field, Op.EQ, ("true" if value.boolean else "false",))
    if isinstance(value, SigmaNumber):
        return Match(field, Op.EQ, (str(value.number),))
    if isinstance(value, SigmaRegularExpression):
        flags = "".join(sorted(_REGEX_FLAGS[f] for f in value.flags))
        return Match(field, Op.REGEX, (str(value.regexp),), cased=True, flags=flags)
    if isinstance(value, SigmaCIDRExpression):
        return Match(field, Op.CIDR, (str(value.network),))
    if isinstance(value, SigmaCompareExpression):
        return Match(field, _COMPARE[value.op], (str(value.number.number),))
    if isinstance(value, SigmaExists):
        return Match(field, Op.EXISTS, ("true" if value.exists else "false",))
    if isinstance(value, SigmaFieldReference):
        if field is None:
            raise Unsupported("a field reference needs a field")
        return Match(field, Op.FIELDREF, (value.field,))
    raise Unsupported(f"value type {type(value).__name__} is not supported")


def _expand(value: SigmaString, ph: Mapping[str, Sequence[str]]) -> list[SigmaString]:
    def values_of(p: Placeholder) -> Iterator[str]:
        if p.name not in ph:
            raise Unsupported(
                f"placeholder %{p.name}% has no values; set them under [placeholders] in the configuration"
            )
        yield from ph[p.name]

    return value.replace_placeholders(values_of)


def _string(field: str | None, value: SigmaString, cased: bool) -> Match:
    parts = list(value.s)
    if not parts or parts == [""]:
        # Empty values are treated as absent (as Zircolite and most SIEMs store them).
        return Match(field, Op.NULL, ())
    lead = parts[0] is SpecialChars.WILDCARD_MULTI
    trail = len(parts) > 1 and parts[-1] is SpecialChars.WILDCARD_MULTI
    middle = parts[int(lead) : len(parts) - int(trail)]
    if all(isinstance(p, str) for p in middle):
        text = "".join(p for p in middle if isinstance(p, str))
        text = text if cased else text.lower()
        op = {(False, False): Op.EQ, (True, True): Op.CONTAINS, (False, True): Op.STARTSWITH,
              (True, False): Op.ENDSWITH}[(lead, trail)]
        if op is Op.CONTAINS and not text:
            return Match(field, Op.EXISTS, ("true",))
        return Match(field, op, (text,), cased=cased)
    pattern = []
    for p in middle:
        if p is SpecialChars.WILDCARD_MULTI:
            pattern.append(".*")
        elif p is SpecialChars.WILDCARD_SINGLE:
            pattern.append(".")
        elif isinstance(p, str):
            pattern.append(re.escape(p if cased else p.lower()))
        else:
            raise Unsupported(f"string part {p!r} is not supported")
    # A leading or trailing `*` is an unanchored search: `^.*` before a pattern makes RE2 scan
    # long values (script blocks) far more slowly for the same answer.
    body = ("" if lead else "^") + "".join(pattern) + ("" if trail else "$")
    return Match(field, Op.GLOB, (body,), cased=cased, flags="s")


def simplify(node: Node) -> Node:
    """Flatten nested AND/OR, fold constants and merge OR-ed value lists of the same field."""
    if isinstance(node, Not):
        inner = simplify(node.child)
        if isinstance(inner, Const):
            return Const(not inner.value)
        if isinstance(inner, Not):
            return inner.child
        return Not(inner)
    if not isinstance(node, (And, Or)):
        return node
    kind = type(node)
    flat: list[Node] = []
    for child in (simplify(c) for c in node.children):
        if isinstance(child, kind):
            flat.extend(child.children)
        elif isinstance(child, Const):
            if child.value == (kind is Or):  # TRUE in an OR, FALSE in an AND decides it
                return child
        else:
            flat.append(child)
    if kind is Or:
        flat = _merge_values(flat)
    unique = list(dict.fromkeys(flat))
    if not unique:
        return Const(kind is And)
    if len(unique) == 1:
        return unique[0]
    return kind(tuple(unique))


def _merge_values(children: Iterable[Node]) -> list[Node]:
    merged: dict[tuple[object, ...], list[str]] = {}
    out: list[Node | tuple[object, ...]] = []
    for c in children:
        if isinstance(c, Match) and c.op in _MERGEABLE:
            key = (c.field, c.op, c.cased, c.flags)
            if key not in merged:
                merged[key] = []
                out.append(key)
            merged[key].extend(c.values)
        else:
            out.append(c)
    result: list[Node] = []
    for item in out:
        if isinstance(item, tuple):
            field, op, cased, flags = item
            values = tuple(sorted(set(merged[item])))
            result.append(Match(field, op, values, cased, flags))  # type: ignore[arg-type]
        else:
            result.append(item)
    return result


__all__ = ["SigmaError", "Unsupported", "compile_rule", "simplify"]
