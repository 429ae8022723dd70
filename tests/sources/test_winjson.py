"""windows.json: OTRF / NXLog lines and evtx_dump-style JSON, counted against the data sets' manifests."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import need
from watchkeeper.sources import winjson
from watchkeeper.sources.autodetect import read_inputs
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.evtx import EvtxSource
from watchkeeper.sources.winjson import WindowsJsonSource


def _read(data: bytes, dead: DeadLetter) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for batch in WindowsJsonSource().read(io.BytesIO(data), "mem.json", dead):
        rows.extend(batch.to_pylist())
    return rows


def _windows_manifest(root: Path) -> dict[str, int]:
    out = {}
    with (root / "manifest.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            archive = row["archive"]
            if archive.endswith(".zip") and ("/windows/" in archive or "/compound/" in archive):
                out[f"{root / archive}!{row['member']}"] = int(row["events"])
    return out


def test_otrf_windows_zips_match_manifest(datasets: Path) -> None:
    root = need(datasets / "security-datasets")
    expected = _windows_manifest(root)
    archives = sorted({k.split("!", 1)[0] for k in expected})
    dead = DeadLetter()
    counts: Counter[str] = Counter()
    for batch in read_inputs(archives, dead):
        assert batch.column("_source")[0].as_py() == "windows.json"
        counts[batch.column("_file")[0].as_py()] += batch.num_rows
    for member, events in expected.items():
        if "!__MACOSX/._" in member:
            # macOS resource forks the manifest counts as one line: binary, so one dead letter each.
            assert counts[member] == 0
            assert dead.by_file[member] == 1
        else:
            assert counts[member] == events, member
            assert dead.by_file[member] == 0, member


def test_regression_json_matches_its_evtx_twin(datasets: Path) -> None:
    root = need(datasets / "sigma" / "regression_data")
    pairs = sorted(root.rglob("*.json"))
    assert pairs
    for json_path in pairs:
        evtx_path = json_path.with_suffix(".evtx")
        dead = DeadLetter()
        from_json = _read(json_path.read_bytes(), dead)
        with evtx_path.open("rb") as fh:
            from_evtx = [r for b in EvtxSource().read(fh, str(evtx_path), dead) for r in b.to_pylist()]
        assert dead.count == 0, json_path
        assert len(from_json) == len(from_evtx) > 0, json_path
        for a, b in zip(from_json, from_evtx, strict=True):
            assert a["EventID"] == b["EventID"]
            assert a["_record"] == b["_record"]


def test_flattening_follows_zircolite_names() -> None:
    line = (
        b'{"Event":{"#attributes":{"xmlns":"x"},"System":{"Provider":{"#attributes":{"Name":"P"}},'
        b'"EventID":{"#attributes":{"Qualifiers":16384},"#text":4625},"Keywords":"0x8010000000000000",'
        b'"TimeCreated":{"#attributes":{"SystemTime":"2024-01-02T03:04:05.5Z"}},"EventRecordID":7,'
        b'"Channel":"Security","Computer":"h","Correlation":null},'
        b'"EventData":{"TargetUserName":"bob","IpAddress":"10.0.0.1","Empty":"",'
        b'"Hashes":"SHA1=AA,MD5=BB"}}}\n'
    )
    dead = DeadLetter()
    (row,) = _read(line, dead)
    assert dead.count == 0
    assert row["EventID"] == "4625" and row["Provider_Name"] == "P"
    assert row["TimeCreated_SystemTime"] == "2024-01-02T03:04:05.5Z"
    assert row["SHA1"] == "AA" and row["MD5"] == "BB" and row["Hashes"] == "SHA1=AA,MD5=BB"
    assert "Empty" not in row and "xmlns" not in row and "Correlation" not in row
    assert row["_user"] == "bob" and row["_src_ip"] == "10.0.0.1" and row["_host"] == "h"
    assert row["_outcome"] == "failure" and row["_record"] == 7
    assert str(row["_time"]).startswith("2024-01-02 03:04:05.5")


def test_bad_lines_are_dead_lettered_and_the_rest_read() -> None:
    good = b'{"EventID":4624,"Channel":"Security","Hostname":"h","RecordNumber":5}'
    data = b"\n".join([good, b"{not json", b"[1, 2]", b"42", b"", good.replace(b"5}", b"6}")])
    dead = DeadLetter()
    rows = _read(data, dead)
    assert [r["_record"] for r in rows] == [5, 6]
    assert dead.count == 3
    assert rows[0]["EventID"] == "4624" and rows[0]["_outcome"] == "success"


def test_flat_lines_fields_in_any_spelling_nested_hashes_and_wild_record_numbers() -> None:
    lines = [
        # NXLog writes `Hostname`; another shipper `computer`: either is the host.
        b'{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","computer":"ws1",'
        b'"RecordNumber":36893488147419103232,"EventData":{"Hashes":"MD5=AB,IMPHASH=CD"}}',
        b'{"EventID":"4625","Channel":"Security","Hostname":"dc1","EventRecordID":"99999999999999999999"}',
    ]
    dead = DeadLetter()
    first, second = _read(b"\n".join(lines), dead)
    assert dead.count == 0
    assert first["_host"] == "ws1" and second["_host"] == "dc1"
    # Hashes from a nested object are split as the record's own would be.
    assert first["Hashes"] == "MD5=AB,IMPHASH=CD" and first["MD5"] == "AB" and first["IMPHASH"] == "CD"
    # A record number beyond 64 bits is no Windows record number: the line numbers the record.
    assert first["_record"] == 1 and second["_record"] == 2


def test_array_and_pretty_printed_objects() -> None:
    obj = b'{\n  "EventID": 1,\n  "Channel": "Microsoft-Windows-Sysmon/Operational",\n  "Image": "a{b}"\n}'
    dead = DeadLetter()
    assert len(_read(b"[" + obj + b",\n" + obj + b"]", dead)) == 2
    assert len(_read(obj + b"\n" + obj, dead)) == 2
    # An array on one line is its events, each with its own record number.
    one_line = b'[{"EventID":1,"Channel":"Security","RecordNumber":7},{"EventID":2,"Channel":"Security"}]'
    assert [r["_record"] for r in _read(one_line, dead)] == [7, 1]
    assert dead.count == 0
    assert len(_read(obj + b'\n{\n  "EventID": [1,', dead)) == 1
    assert dead.count == 1


@pytest.mark.parametrize(
    ("head", "claimed"),
    [
        (b'{"eventVersion":"1.08","eventName":"ListBuckets","awsRegion":"us-east-1"}\n', False),
        (b'{"EventID":4624,"Channel":"Security"}\n', True),
        (b'{"Event":{"System":{"EventID":1}}}', True),
        (b"\x00\x01binary", False),
    ],
)
def test_sniff_claims_only_windows_json(head: bytes, claimed: bool) -> None:
    assert (WindowsJsonSource.sniff(head, "x.json") > 0.5) is claimed


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    dead = DeadLetter()
    rows = _read(data, dead)
    assert rows or dead.count or not data.removeprefix(b"\xef\xbb\xbf").strip(b" \t\r\n\x0b\x0c[],")


def test_over_long_lines_and_values_are_dead_lettered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(winjson, "MAX_LINE", 4096)
    good = b'{"EventID": 4688, "Channel": "Security", "Hostname": "pc1", "NewProcessName": "C:\\\\x.exe"}'
    said: list[str] = []
    dead = DeadLetter(announce=said.append)
    long_line = b'{"EventID": 1, "Channel": "Security", "Message": "' + b"y" * 5000 + b'"}'
    rows = _read(b"\n".join([good, long_line, good]) + b"\n", dead)
    assert [r["_record"] for r in rows] == [1, 3]
    assert said == [f"mem.json, record 2: line of {len(long_line)} bytes is longer than the limit of 4096"]

    said.clear()
    array = b"[" + b",".join([good] * 60) + b"]"
    assert _read(array + b"\n", dead) == []
    assert said == [
        f"mem.json, record 1: line of {len(array)} bytes is longer than the limit of 4096"
        " (a one-line array of events? split it into JSON lines: jq -c '.[]')"
    ]

    # Pretty-printed objects: one held whole over the limit is skipped to its end, not kept in memory.
    fields = b"".join(b'  "M%d": "%s",\n' % (i, b"y" * 1000) for i in range(5))
    pretty = b'{\n  "EventID": 1,\n  "Channel": "Security",\n' + fields + b'  "Hostname": "pc1"\n}\n'
    said.clear()
    rows = _read(b"[\n" + good + b",\n" + pretty.rstrip(b"\n") + b",\n" + good + b"\n]\n", dead)
    assert [r["_record"] for r in rows] == [2, 13]
    assert said == ["mem.json, record 3: value starting at line 3 is longer than the limit of 4096 bytes"]
