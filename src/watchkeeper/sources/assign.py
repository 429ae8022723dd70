"""Columns filled piecewise: a vectorised parser sets a field on some rows at a time.

Parsing a block of log lines with Arrow's regex kernels gives each field for a subset of the
rows (the sshd lines, the matches of one pattern among them …). `Assignments` collects those
pieces and builds one full column per field at the end; as with setting keys of row dicts in
order, the last value set for a row wins, and a row never set is null (so is an empty text:
events hold no empty values).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Rows = np.ndarray  # int64 positions of rows within the block


@dataclass
class Assignments:
    """Pieces of text columns for a block of `n` rows, built into whole columns by `columns`."""

    n: int
    pieces: dict[str, list[tuple[Rows, pa.Array | str]]] = field(default_factory=dict)

    def set(self, name: str, rows: Rows, values: pa.Array | str) -> None:
        """Set `name` on `rows` to `values` (one per row, in order) or to one constant text."""
        if len(rows):
            self.pieces.setdefault(name, []).append((rows, values))

    def names(self) -> list[str]:
        """The fields set so far, in the order they were first set."""
        return list(self.pieces)

    def column(self, name: str) -> pa.Array:
        """The whole column of one field: the last value set per row, null where never set."""
        pieces = self.pieces.get(name, [])
        if len(pieces) == 1:
            rows, only = pieces[0]
            # Set once on every row, in order (a header field): the values are the column.
            if not isinstance(only, str) and len(rows) == self.n and (rows == np.arange(self.n)).all():
                column = only.cast(pa.string()) if only.type != pa.string() else only
                return pc.if_else(pc.equal(column, ""), None, column)
        parts: list[pa.Array] = []
        index = np.full(self.n, -1, dtype=np.int64)
        offset = 0
        for rows, values in pieces:
            if isinstance(values, str):
                parts.append(pa.array([values], pa.string()))
                index[rows] = offset
                offset += 1
            else:
                parts.append(values.cast(pa.string()) if values.type != pa.string() else values)
                index[rows] = offset + np.arange(len(values), dtype=np.int64)
                offset += len(values)
        parts.append(pa.nulls(1, pa.string()))
        index[index < 0] = offset
        column = pc.take(pa.concat_arrays(parts), pa.array(index))
        return pc.if_else(pc.equal(column, ""), None, column)


def subset(mask: pa.Array | np.ndarray, rows: Rows) -> Rows:
    """The positions among `rows` where `mask` (one flag per row of `rows`, nulls false) holds."""
    if isinstance(mask, np.ndarray):
        return rows[mask]
    flags = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
    return rows[flags]
