"""The event model: core field names and the Arrow batches every source produces.

An event keeps its source-native fields under their own names (what Sigma rules are written
against) as string columns. Beside them sit a small core named after OCSF attributes and the
provenance of the record. Core and provenance columns carry a leading underscore so they can
never collide with a native field (Windows' `User` is not our `user`); the lake's `events` view
exposes them without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

CORE_PREFIX = "_"

#: Core fields every source fills where the record holds them (OCSF-style names).
CORE_FIELDS: dict[str, pa.DataType] = {
    "time": pa.timestamp("us", tz="UTC"),
    "source": pa.string(),
    "host": pa.string(),
    "user": pa.string(),
    "src_ip": pa.string(),
    "dst_ip": pa.string(),
    "action": pa.string(),
    "outcome": pa.string(),
    "process": pa.string(),
    "command_line": pa.string(),
    "file_path": pa.string(),
    "bytes": pa.int64(),
}

#: Provenance: the file the record came from (`archive.zip!member` inside archives) and its
#: record number there (EventRecordID for EVTX, line number for text formats).
PROVENANCE_FIELDS: dict[str, pa.DataType] = {
    "file": pa.string(),
    "record": pa.int64(),
}

RESERVED: dict[str, pa.DataType] = {**CORE_FIELDS, **PROVENANCE_FIELDS}
RESERVED_COLUMNS: dict[str, pa.DataType] = {CORE_PREFIX + k: v for k, v in RESERVED.items()}

#: Each record as read (its JSON text, binary), carried only by batches read with a field selection
#: (`sources.base.FieldSelection`): the fields left out are read from it when a detection needs
#: them. Never written to the lake.
RAW_COLUMN = "_raw"
#: Beside it, true where a field's value is not in the text as it stands (a float, which Sigma
#: reads as Python writes it; a list holding objects): a keyword search reads such records whole.
RAW_INEXACT_COLUMN = "_raw_inexact"
_NOT_NATIVE = frozenset({*RESERVED_COLUMNS, RAW_COLUMN, RAW_INEXACT_COLUMN})


def col(name: str) -> str:
    """The batch column name of a core or provenance field (`time` -> `_time`)."""
    return CORE_PREFIX + name


def is_native(column: str) -> bool:
    """Whether a batch column holds a source-native field (not core, not provenance)."""
    return column not in _NOT_NATIVE


def native_columns(batch: pa.RecordBatch | pa.Table) -> list[str]:
    """The native field columns of a batch, in order."""
    return [n for n in batch.schema.names if n not in _NOT_NATIVE]


def fold_case(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with native columns named alike but for case merged into the first (values coalesced).

    Sigma field names are case-insensitive. A source merges the spellings within a batch, but
    batches merged afterwards (small files coalesced, a lake whose files spell a field two ways)
    can hold `Image` and `image` side by side, and a rule must see both.
    """
    names = batch.schema.names
    if len({n.lower() for n in names}) == len(names):  # the usual case: one test per batch
        return batch
    first: dict[str, int] = {}
    groups: dict[int, list[int]] = {}
    for i, name in enumerate(names):
        if name not in _NOT_NATIVE:
            j = first.setdefault(name.lower(), i)
            groups.setdefault(j, []).append(i)
    merged = {j: members for j, members in groups.items() if len(members) > 1}
    if not merged:
        return batch
    folded = {i for members in merged.values() for i in members[1:]}
    arrays, kept = [], []
    for i, name in enumerate(names):
        if i in folded:
            continue
        column = batch.column(i)
        if i in merged:
            parts = [batch.column(k) for k in merged[i]]
            if any(part.type != column.type for part in parts):
                parts = [part.cast(pa.string()) for part in parts]
            column = pc.coalesce(*parts)
        arrays.append(column)
        kept.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=kept)


def repeated(value: str, n: int) -> pa.Array:
    """A string column holding `value` in all `n` rows (`_source`, `_file`)."""
    # Arrow fills it in C: a Python list of n references costs ten times as much.
    return pa.repeat(pa.scalar(value, pa.string()), n)


def _typed(name: str, values: list[Any], n: int) -> pa.Array:
    kind = RESERVED_COLUMNS[name]
    if pa.types.is_timestamp(kind):
        first = next((v for v in values if v is not None), None)
        if isinstance(first, str):
            return to_utc_timestamp(pa.array(values, type=pa.string()))
        return pa.array(values, type=kind)
    return pa.array(values, type=kind)


def to_utc_timestamp(values: pa.Array) -> pa.Array:
    """Parse ISO 8601 strings (with or without offset; naive means UTC) into UTC timestamps."""
    try:
        return pc.cast(values, pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    from datetime import UTC, datetime

    out: list[datetime | None] = []

    for v in values.to_pylist():
        if v is None:
            out.append(None)
            continue
        try:
            t = datetime.fromisoformat(v.replace(" ", "T", 1) if "T" not in v else v)
        except ValueError:
            out.append(None)
            continue
        out.append(t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC))
    return pa.array(out, type=pa.timestamp("us", tz="UTC"))


def text_columns(names: list[str], arrays: list[pa.Array]) -> tuple[list[str], list[pa.Array]]:
    """Native text columns as events hold them: empty strings absent, names that differ only in
    case merged (the first spelling wins); reserved `_` columns pass through."""
    out_names: list[str] = []
    out: list[pa.Array] = []
    by_lower: dict[str, int] = {}
    for key, arr in zip(names, arrays, strict=True):
        if key in RESERVED_COLUMNS:
            out_names.append(key)
            out.append(arr)
            continue
        if pc.any(pc.equal(arr, "")).as_py():
            arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
        lower = key.lower()
        if lower in by_lower:
            i = by_lower[lower]
            out[i] = pc.coalesce(out[i], arr)
            continue
        by_lower[lower] = len(out_names)
        out_names.append(key)
        out.append(arr)
    return out_names, out


def batch_from_rows(rows: list[Mapping[str, Any]]) -> pa.RecordBatch:
    """Build one batch from flattened rows.

    Native values must already be strings (or None); reserved keys (`_time`, `_record`, …) keep
    their core types. Native field names are merged case-insensitively, first spelling wins, and
    empty strings count as absent, as Sigma tools conventionally treat them.
    """
    n = len(rows)
    if n == 0:
        return pa.RecordBatch.from_pydict({})
    struct = pa.array(rows)  # C++ inference over heterogeneous dicts: the union of their keys
    names: list[str] = []
    arrays: list[pa.Array] = []
    for field, arr in zip(struct.type, struct.flatten(), strict=True):
        name = field.name
        if name in RESERVED_COLUMNS:
            if not pa.types.is_null(arr.type) and arr.type != RESERVED_COLUMNS[name]:
                arr = _typed(name, arr.to_pylist(), n)
            elif pa.types.is_null(arr.type):
                arr = pa.nulls(n, RESERVED_COLUMNS[name])
        elif not pa.types.is_string(arr.type):
            arr = arr.cast(pa.string()) if not pa.types.is_null(arr.type) else pa.nulls(n, pa.string())
        names.append(name)
        arrays.append(arr)
    names, arrays = text_columns(names, arrays)
    return pa.RecordBatch.from_arrays(arrays, names=names)
