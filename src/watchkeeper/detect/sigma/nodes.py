"""The compiled form of a Sigma detection: a small tree of typed, hashable nodes.

It is independent of pySigma, so a warm run loads it from the cache without importing pySigma,
and the same nodes can be compiled further per engine (Arrow today, SQL for DuckDB/Spark later).
Equal leaves are equal objects, which lets an evaluator compute each distinct leaf once per batch
however many rules share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum


class Op(StrEnum):
    """What a leaf tests a field's value for."""

    EQ = "eq"  # equals one of the values
    CONTAINS = "contains"
    STARTSWITH = "startswith"
    ENDSWITH = "endswith"
    GLOB = "glob"  # values are anchored regular expressions made from Sigma wildcards
    REGEX = "re"  # values are regular expressions (search semantics); flags in `flags`
    CIDR = "cidr"
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"
    EXISTS = "exists"  # values: ("true",) or ("false",)
    NULL = "null"  # the field is absent or empty
    FIELDREF = "fieldref"  # equals the value of the field named in values[0]


@dataclass(frozen=True)
class Match:
    """A leaf: `field` tested with `op` against any of `values` (an OR over values).

    `field=None` is a keyword search over every field. String values are lower-cased at compile
    time unless `cased`, because Sigma matching is case-insensitive by default.
    """

    field: str | None
    op: Op
    values: tuple[str, ...]
    cased: bool = False
    flags: str = ""  # regex flags from Sigma's `re|i|m|s`: any of "ims"

    def __hash__(self) -> int:
        # Leaves are memo keys on the hot path; a value list can hold hundreds of strings.
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((self.field, self.op, self.values, self.cased, self.flags))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __getstate__(self) -> dict[str, object]:
        # String hashes are salted per process: a hash cached in the rule cache would be stale.
        state = dict(self.__dict__)
        state.pop("_hash", None)
        return state


@dataclass(frozen=True)
class And:
    """All children hold."""

    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """At least one child holds."""

    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    """The child does not hold."""

    child: Node


@dataclass(frozen=True)
class Const:
    """A constant outcome (an empty `1 of` group, a value list that can never match)."""

    value: bool


Node = Match | And | Or | Not | Const


@dataclass(frozen=True)
class LogSource:
    """A rule's Sigma logsource."""

    product: str | None = None
    category: str | None = None
    service: str | None = None

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in (("product", self.product), ("category", self.category),
                                         ("service", self.service)) if v]
        return ", ".join(parts) or "any"


@dataclass(frozen=True)
class CompiledRule:
    """A Sigma rule ready to evaluate, with the metadata detections report."""

    id: str
    title: str
    level: str
    status: str
    tags: tuple[str, ...]
    logsource: LogSource
    condition: Node
    path: str
    description: str = ""
    falsepositives: tuple[str, ...] = field(default=())
    name: str = ""  # Sigma's optional `name`, which filters and correlations may reference
    #: Derived from `condition` at compile time (and cached with it), so a warm run's plan is cheap:
    #: the literals of its literal leaves per field, and what it needs (see `necessary_by_field`).
    literals: tuple[tuple[str, tuple[str, ...]], ...] = ()
    needs: tuple[tuple[str, frozenset[str]], ...] | None = None
    #: Every such requirement of the condition (see `necessary_clauses`); `needs` is one of them.
    clauses: tuple[tuple[tuple[str, frozenset[str]], ...], ...] = ()


#: Literals shorter than this (in bytes) occur almost everywhere: not worth indexing.
MIN_LITERAL = 3


def with_facts(rule: CompiledRule) -> CompiledRule:
    """The rule with `literals`, `needs` and `clauses` derived from its condition."""
    found: dict[str, set[str]] = {}
    _collect_literals(rule.condition, found)
    literals = tuple((f, tuple(sorted(v))) for f, v in sorted(found.items()) if v)
    return replace(rule, literals=literals, needs=necessary_by_field(rule.condition, MIN_LITERAL),
                   clauses=necessary_clauses(rule.condition, MIN_LITERAL))


def _collect_literals(node: Node, out: dict[str, set[str]]) -> None:
    if isinstance(node, Match):
        if node.field is not None and node.op in (Op.EQ, Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH) and not node.cased:
            out.setdefault(node.field.lower(), set()).update(
                v for v in node.values if len(v.encode()) >= MIN_LITERAL
            )
    elif isinstance(node, (And, Or)):
        for child in node.children:
            _collect_literals(child, out)
    elif isinstance(node, Not):
        _collect_literals(node.child, out)


def necessary_clauses(node: Node, min_length: int) -> tuple[tuple[tuple[str, frozenset[str]], ...], ...]:
    """Requirements that must all be met for `node` to hold, each as ((field, literals), …).

    A requirement is met when one of its literals occurs in its field. An AND must meet those of
    all its children, not only of its most selective one (`necessary_literals`): a rule whose
    image name occurs in a batch is still ruled out when its command-line literals do not.
    """
    out = []
    for clause in _clauses(node, min_length):
        fields: dict[str, set[str]] = {}
        for name, literal in clause:
            fields.setdefault(name, set()).add(literal)
        out.append(tuple((f, frozenset(v)) for f, v in sorted(fields.items())))
    return tuple(dict.fromkeys(out))


def _clauses(node: Node, min_length: int) -> list[frozenset[tuple[str, str]]]:
    if isinstance(node, Match):
        found = necessary_literals(node, min_length)
        return [found] if found is not None else []
    if isinstance(node, And):
        return [c for child in node.children for c in _clauses(child, min_length)]
    if isinstance(node, Or):
        # One requirement of the child that holds is met: the union of one per child must be.
        parts = [_clauses(c, min_length) for c in node.children]
        if not parts or any(not p for p in parts):
            return []
        return [frozenset().union(*(min(p, key=len) for p in parts))]
    return []


def necessary_by_field(node: Node, min_length: int) -> tuple[tuple[str, frozenset[str]], ...] | None:
    """`necessary_literals` grouped by field: ((field, literals), …), or None."""
    pairs = necessary_literals(node, min_length)
    if pairs is None:
        return None
    fields: dict[str, set[str]] = {}
    for name, literal in pairs:
        fields.setdefault(name, set()).add(literal)
    return tuple((f, frozenset(v)) for f, v in sorted(fields.items()))


def necessary_literals(node: Node, min_length: int) -> frozenset[tuple[str, str]] | None:
    """(field, literal) pairs of which at least one must occur for `node` to hold, or None.

    A literal test (`eq`, `contains`, `startswith`, `endswith`, case-insensitive) needs one of its
    values in its field; an AND needs what its most selective child needs; an OR needs what any
    child needs. `not`, regular expressions and short literals give no such guarantee.
    """
    if isinstance(node, Match):
        if (node.field is None or node.cased or node.op not in (Op.EQ, Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH)
                or not node.values or any(len(v.encode()) < min_length for v in node.values)):
            return None
        field = node.field.lower()
        return frozenset((field, v) for v in node.values)
    if isinstance(node, And):
        options = [n for n in (necessary_literals(c, min_length) for c in node.children) if n is not None]
        return min(options, key=len) if options else None
    if isinstance(node, Or):
        parts = [necessary_literals(c, min_length) for c in node.children]
        if not parts or any(p is None for p in parts):
            return None
        return frozenset().union(*(p for p in parts if p is not None))
    return None
