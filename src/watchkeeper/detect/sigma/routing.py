"""Which rows of a batch each logsource mapping selects, decided per group of rows, not per row.

Mappings select rows by a few columns (Channel, EventID, EventType) and a batch holds few
distinct combinations of their values. The rows are grouped by combination once per batch; each
mapping's conditions are then looked up per group in Python, and only a mapping that selects
some group gathers rows. Most mappings (a hundred services and categories) select none and cost
a few dictionary lookups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from watchkeeper.detect.sigma.evaluate import BatchMatcher

#: (column, accepted lower-cased values) pairs that must all hold.
Conditions = tuple[tuple[str, frozenset[str]], ...]

#: Up to this many possible combinations, groups are found by counting rather than sorting.
_DENSE_KEYS = 1 << 20


class Routes:
    """The rows of one batch grouped by the values of the columns logsource conditions test."""

    def __init__(self, matcher: BatchMatcher, columns: Sequence[str]) -> None:
        self.n = matcher.n
        key = np.zeros(self.n, dtype=np.int64)
        size = 1
        present = []
        for name in columns:
            column = matcher.prepared(name)
            if column is not None:
                key = key * (column.n_unique + 1) + column.codes
                size *= column.n_unique + 1
                present.append((name, column))
        if size <= _DENSE_KEYS:
            seen = np.bincount(key, minlength=size) > 0
            groups = np.flatnonzero(seen)
            self._group_of = (np.cumsum(seen) - 1)[key]
        else:
            groups, self._group_of = np.unique(key, return_inverse=True)
        self.n_groups = len(groups)
        # column -> lower-cased value (None: no value) -> groups holding it
        self._groups: dict[str, dict[str | None, set[int]]] = {}
        rest = groups
        for name, column in reversed(present):
            base = column.n_unique + 1
            codes, rest = (rest % base).tolist(), rest // base
            strings = column.strings(False)
            by_value: dict[str | None, set[int]] = {}
            for group, code in enumerate(codes):
                by_value.setdefault(strings[code] if code < column.n_unique else None, set()).add(group)
            self._groups[name] = by_value

    def rows(self, conditions: Conditions) -> np.ndarray | None:
        """The rows meeting all `conditions`, in order, or None when no row does."""
        chosen: set[int] | None = None
        for name, accepted in conditions:
            by_value = self._groups.get(name)
            if by_value is None:  # the column is absent: no row has an accepted value
                return None
            groups: set[int] = set()
            for value in accepted:
                groups.update(by_value.get(value, ()))
            chosen = groups if chosen is None else chosen & groups
            if not chosen:
                return None
        if chosen is None:
            return np.arange(self.n)
        selected = np.zeros(self.n_groups, dtype=bool)
        selected[list(chosen)] = True
        return np.flatnonzero(selected[self._group_of])
