"""The C builder of flat JSON lines (`_flatjson.c`) against the Python reader it stands in for.

Every test here reads the same bytes twice, once with the C builder and once with the Python reader
alone (`WATCHKEEPER_PYTHON_READER`), and asserts the same batches and dead letter. The C builder
must also take the lines it was made for, or the comparisons would hold trivially.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import need
from watchkeeper.sources import flatjson
from watchkeeper.sources.base import FieldSelection
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.winjson import WindowsJsonSource

pytestmark = pytest.mark.skipif(
    not flatjson.available() and not os.environ.get("CI"),
    reason="the C builder was not built (no C compiler at install); CI always builds it",
)

SYSMON = "Microsoft-Windows-Sysmon/Operational"
#: Routed as the SigmaHQ rules route Windows events: per channel, lower-cased field names.
SELECTION = FieldSelection(
    route="Channel",
    by_route={
        SYSMON.lower(): frozenset({"channel", "eventid", "image", "commandline", "md5", "imphash", "hashes",
                                   "sha256", "tags", "processid"}),
        "security": frozenset({"channel", "eventid", "targetusername", "logontype", "ipaddress", "hash"}),
    },
    default=frozenset({"eventid", "provider_name"}),
    everything=frozenset({"channel", "eventid", "image", "md5", "hashes", "targetusername", "message"}),
)


@contextmanager
def _python_reader() -> Iterator[None]:
    os.environ[flatjson.DISABLE_VARIABLE] = "1"
    try:
        yield
    finally:
        del os.environ[flatjson.DISABLE_VARIABLE]


def _read(data: bytes, selection: FieldSelection | None, batch_size: int) -> tuple[list[dict[str, list]], list[str]]:
    """Every batch as {lower-cased column: values} (the name a fold keeps may differ), and the dead letter."""
    source = WindowsJsonSource(batch_size)
    source.select(selection)  # type: ignore[arg-type]
    said: list[str] = []
    dead = DeadLetter(announce=said.append)
    batches = [
        {name.lower(): column.to_pylist() for name, column in zip(batch.schema.names, batch.columns, strict=True)}
        for batch in source.read(io.BytesIO(data), "mem.json", dead)
    ]
    return batches, said


def _same_both_ways(data: bytes, selection: FieldSelection | None = SELECTION, batch_size: int = 4096) -> list[dict]:
    fast = _read(data, selection, batch_size)
    with _python_reader():
        slow = _read(data, selection, batch_size)
    assert fast[1] == slow[1]
    assert fast[0] == slow[0]
    return fast[0]


def _taken(line: bytes) -> bool:
    """Whether the C builder takes this line (every field kept)."""
    builder = flatjson.flat_columns(lambda _, key: True, "Channel")
    assert builder is not None
    return builder.add(line, 0, 1) >= 0


def test_the_c_builder_is_built() -> None:
    assert flatjson.available(), "watchkeeper.sources._flatjson is missing: `pip install -e .` builds it (needs gcc)"


@pytest.mark.parametrize("line", [
    b'{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Image":"C:\\\\Windows\\\\cmd.exe",'
    b'"tags":["mordorDataset"],"Keywords":-9223372036854775808,"ERROR_EVT_UNRESOLVED":true,'
    b'"Hashes":"SHA1=AA,MD5=BB","Opcode":null,"Message":"caf\\u00e9 \\ud83d\\ude00\\n"}',
    b'  { "a" : "" , "b" : [ ] , "RecordNumber" : 9999999999999999999 }  \r\n',
    b"{}",
])
def test_it_takes_the_lines_it_was_made_for(line: bytes) -> None:
    assert _taken(line)


@pytest.mark.parametrize("line", [
    b'{"a":1.5}', b'{"a":1e3}', b'{"a":{"b":"c"}}', b'{"a":[["b"]]}', b'{"a":[1.0]}', b'{"a":"x","a":"y"}',
    b'{"a\\u0062":"x"}', b'{"a":-0}', b'{"a":012}', b'{"a":12345678901234567890}', b'{"a":"\\ud800"}',
    b'{"a":"\\udc00"}', b'{"a":"\xff"}', b'{"a":"\xed\xa0\x80"}', b'{"a":"\xc0\xaf"}', b'{"a":"tab\there"}',
    b'{"a":"x"} {"b":"y"}', b'{"a":"x",}', b'{"a":tru}', b'["a"]', b'"a"', b'', b'{"a":"x"', b'{"a":"x\\q"}',
    b'{"Hashes":"MD5=\xc3\xa9"}',
])
def test_it_leaves_the_rest_to_python(line: bytes) -> None:
    assert not _taken(line)
    _same_both_ways(line)


EDGE_LINES = [
    # Routes: a channel's own fields; no channel, an empty one, a number, an escaped one.
    b'{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Image":"a.exe","TargetUserName":"u"}',
    b'{"EventID":4624,"Channel":"Security","Image":"b.exe","TargetUserName":"admin","LogonType":3}',
    b'{"EventID":4624,"Image":"c.exe","TargetUserName":"x","Message":"m"}',
    b'{"EventID":7,"Channel":"","Image":"d.exe","Provider_Name":"p"}',
    b'{"EventID":7,"Channel":5,"Image":"e.exe","Provider_Name":"p"}',
    b'{"EventID":7,"Channel":"Secur\\u0069ty","TargetUserName":"esc"}',
    b'{"EventID":7,"channel":"Security","TargetUserName":"lower-case route key"}',
    # Hash lists: spacing and case, repeats (the first wins), a record's own digest (empty or not).
    b'{"Channel":"Microsoft-Windows-Sysmon/Operational","Hashes":" md5 = AB , sHa256=CD,MD5=EF,IMPHASH=,x"}',
    b'{"Channel":"Microsoft-Windows-Sysmon/Operational","MD5":"own","Hashes":"MD5=AB,IMPHASH=12"}',
    b'{"Channel":"Microsoft-Windows-Sysmon/Operational","MD5":"","Hashes":"MD5=AB"}',
    b'{"Channel":"Microsoft-Windows-Sysmon/Operational","MD5":null,"Hashes":"MD5=\\t\\u001c"}',
    b'{"Channel":"Microsoft-Windows-Sysmon/Operational","Hashes":["MD5=AB","SHA256=CD"],"Hash":"IMPHASH=9"}',
    b'{"Channel":"Security","Hash":"MD5=AB","Hashes":"MD5=CD"}',
    b'{"Channel":"Microsoft-Windows-Sysmon/Operational","Hashes":"no digests here"}',
    # Record numbers: beyond 63 bits, negative, a text, a boolean.
    b'{"RecordNumber":9223372036854775807,"EventID":1}',
    b'{"RecordNumber":9223372036854775808,"EventID":1}',
    b'{"RecordNumber":-5,"EventID":1}',
    b'{"RecordNumber":"12","EventID":1}',
    b'{"RecordNumber":true,"EventID":1}',
    # Lists: empty items and nulls dropped, numbers and booleans as text; an empty list is no value.
    b'{"Channel":"Microsoft-Windows-Sysmon/Operational","tags":["", null, "a", 1, false, "\\u00e9"]}',
    b'{"Channel":"Microsoft-Windows-Sysmon/Operational","tags":[]}',
    b'{"Channel":"Microsoft-Windows-Sysmon/Operational","tags":[null, ""]}',
    # Values the Python reader renders its own way, beside plain ones.
    b'{"Channel":"Microsoft-Windows-Sysmon/Operational","Image":1.5,"CommandLine":{"x":"y"}}',
    b'{"Channel":"Microsoft-Windows-Sysmon/Operational","Image":"a","Image":"b"}',
    b'{"Channel":"Microsoft-Windows-Sysmon/Operational","ProcessId":1,"ProcessID":"2"}',
    b'{"Channel":"Microsoft-Windows-Sysmon/Operational","CommandLine":"nul\\u0000 and \\"quotes\\" \\/ \\b\\f\\r"}',
    # Bad lines among good ones.
    b'{"EventID":1,"Channel":"Security"',
    b'[{"EventID":1},{"EventID":2}]',
    b'{"EventID":"\xff"}',
    b"",
    b"   ",
]


def test_edge_lines_read_the_same_both_ways() -> None:
    data = b"\n".join(EDGE_LINES) + b"\n"
    for selection in (SELECTION, None):
        batches = _same_both_ways(data, selection)
        assert sum(len(b["_record"]) for b in batches) > 20
    # Lines taken by C and lines Python takes share one batch, each column null where the other is.
    rows = _same_both_ways(data, None)[0]
    assert rows["hashes"][7] == " md5 = AB , sHa256=CD,MD5=EF,IMPHASH=,x"
    assert rows["md5"][7] == "AB" and rows["sha256"][7] == "CD" and rows["imphash"][7] is None
    assert rows["md5"][8] == "own" and rows["md5"][9] == "AB" and rows["md5"][10] == ""
    assert rows["tags"][19] == "a\n1\nfalse\né"
    assert rows["image"][22] == "1.5" and rows["image"][23] == "b"


def test_first_line_with_a_byte_order_mark_and_small_batches() -> None:
    data = b"\xef\xbb\xbf  " + b"\n".join(EDGE_LINES[:20])
    for size in (1, 3, 7):
        _same_both_ways(data, SELECTION, batch_size=size)


_KEYS = st.sampled_from(["Channel", "EventID", "Image", "image", "IMAGE", "MD5", "Hashes", "Hash", "tags",
                         "RecordNumber", "Message", "TargetUserName", "ProcessId", "ProcessID", "é", "", "a b"])
_CHANNELS = st.sampled_from([SYSMON, "Security", "", "security", "Other"])
_SCALARS = st.one_of(
    st.text(max_size=12), st.integers(min_value=-(2**64), max_value=2**64), st.booleans(), st.none(),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["MD5=AB,SHA256=CD", " imphash = x ,MD5="]),
)
_VALUES = st.one_of(_SCALARS, _CHANNELS, st.lists(_SCALARS, max_size=4), st.dictionaries(_KEYS, _SCALARS, max_size=2))


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()  # integers beyond 64 bits too


def _line(pairs: list[tuple[str, object]], spaced: bool, ascii_only: bool) -> bytes:
    """A JSON object line with these pairs in this order (duplicates kept), as some shipper writes it."""
    gap = b" " if spaced else b""
    items = [_json(k) + b":" + gap + _json(v) for k, v in pairs]
    line = b"{" + gap + (b"," + gap).join(items) + gap + b"}"
    if ascii_only:  # \u escapes, as Python's json module writes non-ASCII text
        line = line.decode().encode("ascii", "backslashreplace").replace(b"\\x", b"\\u00")
    return line


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.lists(st.tuples(_KEYS, _VALUES), max_size=8), st.booleans(), st.booleans()),
                min_size=1, max_size=12),
       st.sampled_from([SELECTION, None]), st.sampled_from([2, 5, 4096]))
def test_random_objects_read_the_same_both_ways(
    lines: list[tuple[list[tuple[str, object]], bool, bool]], selection: FieldSelection | None, batch_size: int
) -> None:
    data = b"\n".join(_line(pairs, spaced, ascii_only) for pairs, spaced, ascii_only in lines)
    _same_both_ways(data, selection, batch_size)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_KEYS, _VALUES), max_size=6), st.data())
def test_damaged_lines_read_the_same_both_ways(pairs: list[tuple[str, object]], data: st.DataObject) -> None:
    line = bytearray(_line(pairs, False, False))
    for _ in range(data.draw(st.integers(1, 3))):  # bytes changed, cut or inserted
        at = data.draw(st.integers(0, len(line)))
        byte = data.draw(st.sampled_from([b'"', b"\\", b"{", b"}", b",", b":", b"\xff", b"\xc3", b"0", b"-", b"\x01"]))
        match data.draw(st.integers(0, 2)):
            case 0:
                line[at:at + 1] = byte
            case 1:
                del line[at:]
            case _:
                line[at:at] = byte
    _same_both_ways(bytes(line) + b'\n{"EventID":1,"Channel":"Security"}')


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    builder = flatjson.flat_columns(lambda _, key: True, "Channel")
    assert builder is not None
    added = sum(builder.add(line, i, i) >= 0 for i, line in enumerate(data.split(b"\n")))
    assert len(builder.build(len(data.split(b"\n")))) >= 0 and added >= 0


def test_otrf_members_read_the_same_both_ways(datasets: Path) -> None:
    zips = sorted(need(datasets / "security-datasets" / "datasets" / "atomic" / "windows").rglob("*.zip"))
    taken = lines = 0
    for path in zips[::25]:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                data = archive.read(member)
                for selection in (SELECTION, None):
                    _same_both_ways(data, selection)
                for line in data.splitlines()[:200]:
                    lines += 1
                    taken += _taken(line)
    # The reason the builder exists: it takes nearly every OTRF line (the rest are pretty-printed).
    assert lines > 1000 and taken > 0.7 * lines
