"""Reading the lake: streaming scans in the event shape, and a read-only DuckDB over its views."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from watchkeeper.errors import LakeError, Where
from watchkeeper.events import RESERVED, RESERVED_COLUMNS, col, is_native
from watchkeeper.lake import layout
from watchkeeper.lake.writer import EVENT_ID

#: Columns of the `events` view: the core and provenance fields without their underscore.
EVENTS_COLUMNS: tuple[str, ...] = (*RESERVED, EVENT_ID.removeprefix("_"))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


#: The Arrow datasets behind the views are registered under these names (then a number).
_HIDDEN = "__watchkeeper_lake_"


def _folded(con: duckdb.DuckDBPyConnection, relation: str, names: list[str]) -> str:
    """A SELECT of `relation` under its Arrow column `names`, those named alike but for case merged.

    Files of one source may spell a field two ways (`Image`, `image`); DuckDB's names are
    case-insensitive and it would show the second as `image_1`, half the events under each. The
    view gives one column under the first spelling, its value the first spelling's that is set.
    """
    seen = [d[0] for d in con.execute(f"SELECT * FROM {_quote(relation)} LIMIT 0").description]
    groups: dict[str, list[str]] = {}
    first: dict[str, str] = {}
    for arrow, duck in zip(names, seen, strict=True):
        key = arrow.lower() if is_native(arrow) else arrow
        groups.setdefault(key, []).append(duck)
        first.setdefault(key, arrow)
    columns = [
        f"{_quote(ducks[0]) if len(ducks) == 1 else 'COALESCE(' + ', '.join(map(_quote, ducks)) + ')'}"
        f" AS {_quote(first[key])}"
        for key, ducks in groups.items()
    ]
    return f"SELECT {', '.join(columns)} FROM {_quote(relation)}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Lake:
    """A Parquet lake on disk, for reading (writing goes through `LakeWriter`)."""

    def __init__(self, path: Path | str) -> None:
        self.root = Path(path)

    def files(self, since: datetime | None = None, until: datetime | None = None) -> dict[str, list[Path]]:
        """Data files per source, pruned to the days that can hold events in `[since, until)`.

        Events without a time (`day=unknown`) belong to no range, so only an unbounded call lists them.
        """
        first: date | None = _utc(since).date() if since is not None else None
        last: date | None = _utc(until).date() if until is not None else None
        out: dict[str, list[Path]] = defaultdict(list)
        for partition, directory in layout.partitions(self.root):
            if partition.day is None:
                if first is not None or last is not None:
                    continue
            elif (first is not None and partition.day < first) or (last is not None and partition.day > last):
                continue
            out[partition.source].extend(layout.data_files(directory))
        return {source: paths for source, paths in sorted(out.items()) if paths}

    def sources(self) -> list[str]:
        """The sources the lake holds events of."""
        return list(self.files())

    @staticmethod
    def _dataset(paths: list[Path]) -> ds.Dataset:
        try:
            # Schema evolution: a field new in later files is a column; older rows read it as NULL.
            schema = pa.unify_schemas([pq.read_schema(p) for p in paths], promote_options="permissive")
            return ds.dataset([str(p) for p in paths], schema=schema, format="parquet")
        except (pa.ArrowException, OSError) as exc:
            raise LakeError(f"cannot read the lake: {exc}", Where(file=str(paths[0].parent))) from exc

    def scan(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        sources: Collection[str] | None = None,
        batch_size: int = 8192,
        *,
        with_event_id: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """Stream the events with `since <= time < until`, one source per batch, in the event shape.

        Partitions are pruned by day, rows filtered by `_time`; memory stays at a few row groups.
        """
        wanted = set(sources) if sources is not None else None
        condition: ds.Expression | None = None
        if since is not None:
            condition = ds.field(col("time")) >= pa.scalar(_utc(since), RESERVED_COLUMNS[col("time")])
        if until is not None:
            upper = ds.field(col("time")) < pa.scalar(_utc(until), RESERVED_COLUMNS[col("time")])
            condition = upper if condition is None else condition & upper
        for source, paths in self.files(since, until).items():
            if wanted is not None and source not in wanted:
                continue
            dataset = self._dataset(paths)
            columns = [n for n in dataset.schema.names if with_event_id or n != EVENT_ID]
            scanner = dataset.scanner(
                columns=columns,
                filter=condition,
                batch_size=batch_size,
                batch_readahead=1,
                fragment_readahead=1,
            )
            for batch in scanner.to_batches():
                if batch.num_rows:
                    yield batch

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with one view per source and an `events` view, unable to touch files.

        The views read through Arrow datasets, so file system access is switched off and locked
        before any user SQL runs: a query can read the lake, never write it or anything else.
        """
        con = duckdb.connect(config={"threads": 1})
        selects: list[str] = []
        views: dict[str, str] = {"events": "the events view"}
        for source, paths in self.files().items():
            name = layout.view_name(source)
            if name in views:
                raise LakeError(f"source {source!r} and {views[name]} would share the view {name}")
            views[name] = f"source {source!r}"
            dataset = self._dataset(paths)
            hidden = f"{_HIDDEN}{len(views)}"
            con.register(hidden, dataset)
            con.execute(f"CREATE VIEW {_quote(name)} AS {_folded(con, hidden, dataset.schema.names)}")
            fields = ", ".join(f"{_quote(col(f))} AS {_quote(f)}" for f in RESERVED)
            selects.append(f"SELECT {fields}, {_quote(EVENT_ID)} AS event_id FROM {_quote(name)}")
        if not selects:
            typed = ", ".join(
                f"CAST(NULL AS {'TIMESTAMPTZ' if f == 'time' else 'BIGINT' if f in ('bytes', 'record') else 'VARCHAR'}) AS {_quote(f)}"
                for f in RESERVED
            )
            selects.append(f"SELECT {typed}, CAST(NULL AS VARCHAR) AS event_id WHERE false")
        con.execute("CREATE VIEW events AS " + " UNION ALL ".join(selects))
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con
