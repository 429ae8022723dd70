"""The lake's writer and reader: partitions, idempotency, schema evolution, retention, atomicity.

Events are written through `LakeWriter` (independent of the source parsers) and read back through
`watchkeeper query` and `Lake.scan`.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import watchkeeper.cli  # noqa: F401  (registers every command on the app)
from watchkeeper.cli.app import app
from watchkeeper.errors import LakeError
from watchkeeper.events import RESERVED_COLUMNS, batch_from_rows
from watchkeeper.lake import EVENT_ID, Lake, LakeWriter, layout
from watchkeeper.lake import writer as writer_module
from watchkeeper.lake.writer import write_parquet

DAY = datetime(2024, 3, 1, tzinfo=UTC)


def query(lake: Path, sql: str) -> list[dict[str, Any]]:
    """Rows of `watchkeeper query --format json`."""
    result = CliRunner().invoke(app, ["query", "--lake", str(lake), "--format", "json", sql])
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def rows(n: int, source: str = "test.app", start: int = 0, **extra: str) -> pa.RecordBatch:
    """`n` events over three days, every fifth without a time."""
    return batch_from_rows(
        [
            {
                "_source": source,
                "_record": i,
                "_time": None if i % 5 == 0 else DAY + timedelta(days=i % 3, seconds=i),
                "_host": f"h{i % 4}",
                "msg": f"event {i}",
                **extra,
            }
            for i in range(start, start + n)
        ]
    )


def visible_files(lake: Path) -> list[Path]:
    """Every data file a reader would open."""
    return sorted(lake.glob("source=*/day=*/part-*.parquet"))


def test_partitions_by_source_and_day(tmp_path: Path) -> None:
    with LakeWriter(tmp_path) as writer:
        writer.write(rows(30))
        writer.write(rows(7, source="other.log"))
    days = sorted(p.parent.name for p in visible_files(tmp_path) if "test.app" in str(p))
    assert days == ["day=2024-03-01", "day=2024-03-02", "day=2024-03-03", "day=unknown"]
    counts = query(tmp_path, "SELECT source, count(*) AS n FROM events GROUP BY source ORDER BY source")
    assert counts == [{"source": "other.log", "n": 7}, {"source": "test.app", "n": 30}]
    unknown = query(tmp_path, "SELECT count(*) AS n FROM test_app WHERE _time IS NULL")
    assert unknown == [{"n": 6}]


def test_ingesting_twice_adds_nothing(tmp_path: Path) -> None:
    for _ in range(2):
        with LakeWriter(tmp_path) as writer:
            writer.write(rows(50))
    assert writer.stats.sources["test.app"].written == 0
    assert writer.stats.sources["test.app"].duplicates == 50
    assert query(tmp_path, "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events") == [
        {"n": 50, "ids": 50}
    ]


def test_overlapping_input_adds_only_new_events(tmp_path: Path) -> None:
    with LakeWriter(tmp_path) as writer:
        writer.write(rows(40))
    with LakeWriter(tmp_path) as writer:
        writer.write(rows(60))  # the first 40 again, then 20 new
        writer.write(rows(60))  # everything again inside one run
    stats = writer.stats.sources["test.app"]
    assert (stats.read, stats.written, stats.duplicates) == (120, 20, 100)
    assert query(tmp_path, "SELECT count(*) AS n FROM events") == [{"n": 60}]


def test_identical_records_at_different_positions_are_distinct(tmp_path: Path) -> None:
    same = {"_source": "linux.auth", "_time": DAY, "message": "Failed password for root"}
    batch = batch_from_rows([{**same, "_record": 1}, {**same, "_record": 2}])
    with LakeWriter(tmp_path) as writer:
        writer.write(batch)
    assert query(tmp_path, "SELECT count(*) AS n FROM linux_auth") == [{"n": 2}]


def test_event_id_ignores_absent_columns(tmp_path: Path) -> None:
    # The same event in a batch with an extra, empty column is the same event.
    with LakeWriter(tmp_path) as writer:
        writer.write(rows(10))
    wider = rows(10).append_column("rare_field", pa.nulls(10, pa.string()))
    with LakeWriter(tmp_path) as writer:
        writer.write(wider)
    assert writer.stats.sources["test.app"].duplicates == 10


def test_separator_in_values_does_not_merge_events(tmp_path: Path) -> None:
    a = batch_from_rows([{"_source": "t.s", "_record": 1, "a": "x\x1fy"}])
    b = batch_from_rows([{"_source": "t.s", "_record": 1, "a": "x", "b": "y"}])
    with LakeWriter(tmp_path) as writer:
        writer.write(a)
    with LakeWriter(tmp_path) as writer:
        writer.write(b)
    assert query(tmp_path, "SELECT count(*) AS n FROM t_s") == [{"n": 2}]


def test_new_field_adds_a_column_old_rows_null(tmp_path: Path) -> None:
    with LakeWriter(tmp_path) as writer:
        writer.write(rows(10))
    with LakeWriter(tmp_path) as writer:
        writer.write(rows(5, start=100, newField="value"))
    found = query(
        tmp_path,
        "SELECT count(*) FILTER (newField IS NULL) AS old, count(newField) AS new FROM test_app",
    )
    assert found == [{"old": 10, "new": 5}]


def test_a_field_spelled_two_ways_by_two_files_is_one_column(tmp_path: Path) -> None:
    with LakeWriter(tmp_path) as writer:
        writer.write(rows(10, Image="a.exe"))
    with LakeWriter(tmp_path) as writer:
        writer.write(rows(5, start=100, image="b.exe"))
    found = query(tmp_path, "SELECT Image AS v, count(*) AS n FROM test_app GROUP BY v ORDER BY v")
    assert found == [{"v": "a.exe", "n": 10}, {"v": "b.exe", "n": 5}]
    (row,) = query(tmp_path, "SELECT * FROM test_app LIMIT 1")
    assert len([k for k in row if k.lower().startswith("image")]) == 1  # not `image_1` beside it


def test_retention_drops_old_partitions_and_events(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    recent, old = now - timedelta(days=3), now - timedelta(days=100)
    batch = batch_from_rows(
        [{"_source": "t.s", "_record": i, "_time": old if i < 4 else recent, "m": str(i)} for i in range(10)]
    )
    with LakeWriter(tmp_path) as writer:
        writer.write(batch)
    assert query(tmp_path, "SELECT count(*) AS n FROM events") == [{"n": 10}]
    with LakeWriter(tmp_path, retention_days=30) as writer:
        writer.write(batch)
    assert writer.stats.partitions_expired == 1
    assert writer.stats.sources["t.s"].expired == 4
    assert {p.parent.name for p in visible_files(tmp_path)} == {f"day={recent.date().isoformat()}"}
    assert query(
        tmp_path, "SELECT count(*) AS n, min(time) >= now() - INTERVAL 30 DAY AS ok FROM events"
    ) == [{"n": 6, "ok": True}]


def test_compaction_merges_small_files(tmp_path: Path) -> None:
    for k in range(3):
        with LakeWriter(tmp_path, compact_min_files=3) as writer:
            writer.write(batch_from_rows([{"_source": "t.s", "_time": DAY, "_record": k, "m": "x"}]))
    assert writer.stats.files_compacted == 3
    assert len(visible_files(tmp_path)) == 1
    assert query(tmp_path, "SELECT count(*) AS n FROM t_s") == [{"n": 3}]


def test_lake_compact_command(tmp_path: Path) -> None:
    for k in range(2):
        with LakeWriter(tmp_path) as writer:
            writer.write(batch_from_rows([{"_source": "t.s", "_time": DAY, "_record": k, "m": "x"}]))
    assert len(visible_files(tmp_path)) == 2
    result = CliRunner().invoke(app, ["lake", "compact", "--lake", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "merged 2 files" in result.stdout
    assert len(visible_files(tmp_path)) == 1
    assert query(tmp_path, "SELECT count(*) AS n FROM t_s") == [{"n": 2}]


def test_interrupted_compaction_is_invisible_and_finished_later(tmp_path: Path) -> None:
    for k in range(2):
        with LakeWriter(tmp_path) as writer:
            writer.write(rows(4, start=10 * k))
    directory = layout.Partition("test.app", None).path(tmp_path)
    inputs = layout.data_files(directory)
    merged = pa.concat_tables([pq.read_table(p) for p in inputs])
    # A compaction that crashed after publishing its output, before deleting its inputs.
    output = write_parquet(merged, directory)
    layout.write_journal(directory, output.name, [p.name for p in inputs])
    assert query(tmp_path, "SELECT count(*) AS n FROM test_app WHERE _time IS NULL") == [{"n": 2}]
    with LakeWriter(tmp_path):
        pass
    assert layout.data_files(directory) == [output]
    assert sorted(p.name for p in directory.iterdir()) == [output.name]


def test_failed_batch_publishes_nothing_partial(tmp_path: Path) -> None:
    with LakeWriter(tmp_path, flush_rows=10) as writer:
        writer.write(rows(20))
    before = visible_files(tmp_path)
    bad = pa.RecordBatch.from_pydict({"_source": ["test.app"], "_time": ["not a time"], "m": ["x"]})
    with pytest.raises(LakeError, match="_time"), LakeWriter(tmp_path, flush_rows=10) as writer:
        writer.write(rows(60, start=1000))  # flushed: complete files
        writer.write(rows(5, start=2000))  # buffered: dropped with the error
        writer.write(bad)
    after = visible_files(tmp_path)
    assert set(before) < set(after)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(layout.TEMP_SUFFIX)]
    for path in after:
        pq.read_table(path)  # every visible file is complete
    assert query(tmp_path, "SELECT count(*) AS n FROM events") == [
        {"n": sum(pq.read_metadata(p).num_rows for p in after)}
    ]


WRITER_SCRIPT = """
import sys
from datetime import UTC, datetime
from watchkeeper.events import batch_from_rows
from watchkeeper.lake import LakeWriter
t = datetime(2024, 3, 1, tzinfo=UTC)
with LakeWriter(sys.argv[1], flush_rows=20000, compact_min_files=10**6) as writer:
    for k in range(10**6):
        writer.write(batch_from_rows([
            {"_source": "t.s", "_time": t, "_record": k * 2000 + i, "m": "x" * 200 + str(i)} for i in range(2000)
        ]))
"""


def test_killed_writer_leaves_only_complete_files(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(lake)])
    try:
        deadline = time.monotonic() + 60
        while len(visible_files(lake)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert visible_files(lake), "the writer published nothing within a minute"
        time.sleep(0.3)  # most likely inside the next Parquet write
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    files = visible_files(lake)
    total = sum(pq.read_table(p).num_rows for p in files)  # raises on a partial file
    assert total % 20000 == 0 and total > 0
    with LakeWriter(lake):
        pass  # a new writer cleans what the killed one left
    assert not [p for p in lake.rglob(".*") if p.name != layout.LOCK_NAME]
    assert query(lake, "SELECT count(*) AS n FROM t_s") == [{"n": total}]


def test_scan_prunes_by_time_and_keeps_event_shape(tmp_path: Path) -> None:
    with LakeWriter(tmp_path) as writer:
        writer.write(rows(30))
        writer.write(rows(9, source="other.log"))
    since, until = DAY + timedelta(days=1), DAY + timedelta(days=2)
    batches = list(Lake(tmp_path).scan(since, until, batch_size=4))
    assert batches and all(b.num_rows <= 4 for b in batches)
    for batch in batches:
        assert len(set(batch.column("_source").to_pylist())) == 1
        assert set(RESERVED_COLUMNS) <= set(batch.schema.names) and EVENT_ID not in batch.schema.names
        assert batch.schema.field("_time").type == RESERVED_COLUMNS["_time"]
    times = [t for b in batches for t in b.column("_time").to_pylist()]
    expected = query(
        tmp_path,
        f"SELECT count(*) AS n FROM events WHERE time >= '{since.isoformat()}' AND time < '{until.isoformat()}'",
    )
    assert len(times) == expected[0]["n"] > 0
    assert all(since <= t < until for t in times)
    only = list(Lake(tmp_path).scan(sources=["other.log"]))
    assert sum(b.num_rows for b in only) == 9


def test_query_error_is_one_line(tmp_path: Path) -> None:
    with LakeWriter(tmp_path) as writer:
        writer.write(rows(3))
    for sql in ("SELEC 1", "SELECT * FROM no_such_view", f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'"):
        result = CliRunner().invoke(app, ["query", "--lake", str(tmp_path), sql])
        assert result.exit_code == 2, sql
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("error: query failed")
        assert "Traceback" not in result.output
    assert not (tmp_path / "x.csv").exists()


def test_unsafe_source_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LakeError), LakeWriter(tmp_path) as writer:
        writer.write(batch_from_rows([{"_source": "../escape", "m": "x"}]))
    assert not visible_files(tmp_path)


def test_event_ids_are_computed_in_c_where_built() -> None:
    if writer_module._eventid is None and not os.environ.get("CI"):
        pytest.skip("the C event-id module was not built (no C compiler at install); CI always builds it")
    assert writer_module._eventid is not None, "watchkeeper.lake._eventid is missing: `pip install -e .` builds it"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=40), st.integers(0, 5), st.booleans())
def test_event_id_digests_are_md5_whatever_the_bytes(values: list[bytes], skip: int, large: bool) -> None:
    # Around the 55/56/64-byte padding edges too (binary sizes run up to 300).
    column = pa.array(values, pa.large_binary() if large else pa.binary()).slice(min(skip, len(values)))
    expected = [hashlib.md5(v).hexdigest() for v in column.to_pylist()]
    assert writer_module.md5_hex(column).to_pylist() == expected


def test_event_ids_are_unchanged_by_the_c_digests() -> None:
    # Ids are stored in lakes: the C module must give the ids hashlib gave for the same events.
    batch = batch_from_rows([{"_source": "generic.json", "_record": i, **row}
                             for i, row in enumerate([{"a": "x", "b": "1"}, {"a": "y\x1fz"}, {}])])
    ids = writer_module.event_ids(batch, "generic.json").to_pylist()
    saved = writer_module._eventid
    writer_module._eventid = None
    try:
        assert writer_module.event_ids(batch, "generic.json").to_pylist() == ids
    finally:
        writer_module._eventid = saved
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)


def test_the_c_digests_refuse_offsets_outside_their_buffers() -> None:
    if writer_module._eventid is None:
        pytest.skip("the C event-id module was not built")
    offsets = pa.array([0, 3, 6], pa.int32()).buffers()[1]
    assert writer_module._eventid.md5_hex(offsets, b"abcdef", 0, 2, False) == (
        hashlib.md5(b"abc").hexdigest() + hashlib.md5(b"def").hexdigest()
    ).encode()
    for first, count in ((1, 2), (0, 3), (2**62, 2**40), (-1, 1)):
        with pytest.raises(ValueError, match="offsets"):
            writer_module._eventid.md5_hex(offsets, b"abcdef", first, count, False)
    backwards = pa.array([0, 5, 2], pa.int32()).buffers()[1]
    with pytest.raises(ValueError, match="outside"):
        writer_module._eventid.md5_hex(backwards, b"abcdef", 0, 2, False)


def test_a_file_leaves_out_fields_none_of_its_events_has(tmp_path: Path) -> None:
    # One batch over three days; `rare` has a value on one day only: the other days' files leave
    # it out, and the lake reads it as null there.
    batch = batch_from_rows([{"_source": "test.app", "_record": i, "_time": DAY + timedelta(days=i % 3),
                              "msg": f"event {i}", **({"rare": "x"} if i == 4 else {})} for i in range(9)])
    with LakeWriter(tmp_path) as writer:
        writer.write(batch)
    schemas = {f.parent.name: set(pq.read_schema(f).names) for f in visible_files(tmp_path)}
    assert len(schemas) == 3 and [day for day, names in schemas.items() if "rare" in names] == ["day=2024-03-02"]
    assert all(set(RESERVED_COLUMNS) | {"msg", EVENT_ID} <= names for names in schemas.values())
    assert query(tmp_path, "SELECT count(rare) AS kept, count(*) AS n FROM test_app") == [{"kept": 1, "n": 9}]
    assert query(tmp_path, "SELECT count(*) AS n FROM events") == [{"n": 9}]
    with LakeWriter(tmp_path) as writer:
        writer.write(batch)  # the ids do not depend on the columns a file kept
    assert writer.stats.sources["test.app"].duplicates == 9
