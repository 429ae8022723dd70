"""Reading a source's whole output in tests: one table, the dead letter and what it announced."""

from __future__ import annotations

import io

import pyarrow as pa

from watchkeeper.sources.base import Source
from watchkeeper.sources.deadletter import DeadLetter


def read_with(
    source: type[Source], data: bytes, origin: str, batch_size: int = 2
) -> tuple[pa.Table | None, DeadLetter, list[str]]:
    """All batches of `data` read by `source` as one table (None if none), the dead letter, its lines."""
    said: list[str] = []
    dead = DeadLetter(announce=said.append)
    batches = list(source(batch_size=batch_size).read(io.BytesIO(data), origin, dead))
    if not batches:
        return None, dead, said
    table = pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="default")
    return table, dead, said
