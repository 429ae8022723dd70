"""The compiled form of a Sigma detection: a small tree of typed, hashable nodes.

It is independent of pySigma, so a warm run loads it from the cache without importing pySigma,
and the same nodes can be compiled further per engine (Arrow today, SQL for DuckDB/Spark later).
Equal leaves are equal objects, which lets an evaluator compute each distinct leaf once per batch
however many rules share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


def fields_of(node: Node) -> set[str]:
    """Every field name a condition reads (keyword searches excluded)."""
    if isinstance(node, Match):
        names = {node.field} if node.field is not None else set()
        if node.op is Op.FIELDREF:
            names.add(node.values[0])
        return names
    if isinstance(node, (And, Or)):
        return set().union(*(fields_of(c) for c in node.children)) if node.children else set()
    if isinstance(node, Not):
        return fields_of(node.child)
    return set()
