"""Which fields of a source's events a rule set reads, so the source can leave the rest unread.

Reading is most of a hunt's time, and most of an event's fields are read by no rule: OTRF's
NXLog header fields, or a Security event's kilobytes of rendered `Message`, which only rules on
other channels test. A rule reads the fields its condition names (after its logsource mapping's
renames) and the columns its mapping's conditions test. The fields are grouped by the value of
the one column most mappings route on (Windows: `Channel`), so an event carries the fields of the
rules that can see it. Keyword (unbound) searches read no field: they search each record's text
and read every field of the few records that text admits (`evaluate.BatchColumns`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from watchkeeper.detect.sigma.nodes import And, Match, Node, Not, Op, Or
from watchkeeper.detect.sigma.routing import Conditions
from watchkeeper.sources.base import FieldSelection


def fields_read(node: Node, out: set[str] | None = None) -> set[str]:
    """The lower-cased field names a condition reads (a field reference reads two)."""
    found = set() if out is None else out
    if isinstance(node, Match):
        if node.field is not None:
            found.add(node.field.lower())
            if node.op is Op.FIELDREF and node.values:
                found.add(node.values[0].lower())
    elif isinstance(node, (And, Or)):
        for child in node.children:
            fields_read(child, found)
    elif isinstance(node, Not):
        fields_read(node.child, found)
    return found


def select_fields(steps: Iterable[tuple[Conditions, Mapping[str, str], Iterable[Node]]]) -> FieldSelection:
    """The selection for logsource steps, each (its conditions, its renames, its rules' conditions)."""
    steps = list(steps)
    counts = Counter(name for conditions, _, _ in steps for name, _ in conditions)
    route = counts.most_common(1)[0][0] if counts else None
    default: set[str] = set()
    by_route: dict[str, set[str]] = {}
    read: dict[int, set[str]] = {}  # per condition: a rule may serve several steps
    for conditions, renames, rules in steps:
        fields: set[str] = {name.lower() for name, _ in conditions}
        for condition in rules:
            found = read.get(id(condition))
            if found is None:
                found = read[id(condition)] = fields_read(condition)
            fields |= found
        lowered = {k.lower(): v.lower() for k, v in renames.items()}
        # A renamed field is read from its new column, or from its own where that is absent.
        fields |= {lowered[f] for f in fields if f in lowered}
        values = dict(conditions).get(route) if route is not None else None
        if values is None:
            default |= fields
            continue
        for value in values:
            by_route.setdefault(value, set()).update(fields)
    everything = frozenset(default.union(*by_route.values()))
    return FieldSelection(
        route=route,
        by_route={value: frozenset(fields | default) for value, fields in by_route.items()},
        default=frozenset(default),
        everything=everything,
    )
