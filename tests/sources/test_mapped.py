"""The user-mapped CSV / JSON-lines source."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.lines import MAX_LINE, parse_time, times_of
from watchkeeper.sources.mapped import MappedSource

MAPPING = {"time": "when", "user": "who", "src_ip": "ip", "bytes": "size", "CommandLine": "cmd"}


def read(source: MappedSource, data: bytes) -> tuple[list[dict[str, object]], DeadLetter]:
    dead = DeadLetter()
    batches = list(source.read(io.BytesIO(data), "file", dead))
    assert all(b.num_rows <= source.batch_size for b in batches)
    return [r for b in batches for r in b.to_pylist()], dead


def test_csv_mapping() -> None:
    data = b'when,who,ip,size,cmd\n2024-01-01T00:00:00Z,alice,10.0.0.1,42,whoami /all\n1700000000,bob,,x,"a,b"\nshort,row\n'
    rows, dead = read(MappedSource(MAPPING, label="edr.csv"), data)
    assert dead.count == 1 and len(rows) == 2
    a, b = rows
    assert a["_time"] == datetime(2024, 1, 1, tzinfo=UTC) and a["_user"] == "alice" and a["_bytes"] == 42
    assert a["CommandLine"] == "whoami /all" and a["who"] == "alice" and a["_source"] == "edr.csv"
    assert b["_time"] == datetime.fromtimestamp(1700000000, UTC) and b["_bytes"] is None
    assert b["_src_ip"] is None and b["CommandLine"] == "a,b" and b["_record"] == 3


def test_csv_bad_utf8_kept_and_reported_long_line_dead_lettered() -> None:
    long_row = b"x" * (MAX_LINE + 10)
    data = b'\xef\xbb\xbfwhen,who,ip,size,cmd\n1,caf\xe9,,,"two\nlines \xff"\n' + long_row + b"\n2,bob,,,ok\n"
    rows, dead = read(MappedSource(MAPPING), data)
    assert [r["_user"] for r in rows] == ["caf\ufffd", "bob"]
    assert rows[0]["CommandLine"] == "two\nlines \ufffd" and rows[1]["_record"] == 5  # csv's count stays the file's
    assert dead.repaired == 2 and dead.count == 1  # lines 2 and 3 kept with U+FFFD; line 4 dead-lettered


def test_json_lines_mapping_and_bad_lines() -> None:
    data = b'{"when": 1700000000000, "who": "carol", "cmd": ["x", "y"]}\n[1,2]\n{oops\n\n{"who": null}\n'
    rows, dead = read(MappedSource(MAPPING), data)
    assert dead.count == 2 and len(rows) == 2
    assert rows[0]["_time"] == datetime.fromtimestamp(1700000000, UTC) and rows[0]["CommandLine"] == "x,y"
    assert rows[1]["_user"] is None and rows[1]["_record"] == 5


def test_never_sniffed() -> None:
    assert MappedSource.sniff(b"a,b\n1,2\n", "x.csv") == 0.0


def test_parse_time_units() -> None:
    assert parse_time("1700000000.5") == 1_700_000_000_500_000
    assert parse_time(1_700_000_000_000) == parse_time(1_700_000_000_000_000) == 1_700_000_000_000_000
    assert parse_time("2024-01-01 01:00:00+01:00") == parse_time("2024-01-01T00:00:00Z")
    assert parse_time("nonsense") is None and parse_time(True) is None


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([None, "csv", "jsonl"]))
def test_arbitrary_bytes_never_raise(data: bytes, fmt: str | None) -> None:
    read(MappedSource(MAPPING, fmt=fmt, batch_size=2), data)


_CELL = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\x00"), max_size=10)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_CELL, _CELL), min_size=1, max_size=10))
def test_csv_round_trip(values: list[tuple[str, str]]) -> None:
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["who", "cmd"])
    writer.writerows(values)
    rows, dead = read(MappedSource(MAPPING, fmt="csv"), buf.getvalue().encode())
    assert dead.count == 0
    assert [(r.get("_user") or "", r.get("CommandLine") or "") for r in rows] == values


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.floats(allow_nan=True).map(str),
            st.integers(min_value=-(10**18), max_value=10**18).map(str),
            st.datetimes(timezones=st.just(UTC)).map(lambda t: t.isoformat()),
            st.datetimes().map(lambda t: t.isoformat(sep=" ")),
            st.sampled_from(["", "-", "now", "2024-01-02T03:04:05Z", "1700000000.5"]),
        ),
        max_size=8,
    )
)
def test_times_of_a_column_as_parse_time_reads_each(values: list[str | None]) -> None:
    expected = [parse_time(v) for v in values]
    got = times_of(pa.array(values, pa.string())).cast(pa.int64()).to_pylist()
    assert got == expected
