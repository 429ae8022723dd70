"""Field selection: a hunt reads only the fields its rules read, and finds exactly what a full read finds."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import need
from watchkeeper.detect.sigma.engine import SigmaEngine
from watchkeeper.detect.sigma.evaluate import BatchColumns, BatchMatcher
from watchkeeper.detect.sigma.loader import load_rules
from watchkeeper.detect.sigma.nodes import Match, Node, Op
from watchkeeper.detect.sigma.routing import Conditions
from watchkeeper.detect.sigma.selection import select_fields
from watchkeeper.events import RAW_COLUMN
from watchkeeper.hunt import Detection, HuntOptions, run_hunt
from watchkeeper.sources import load_all
from watchkeeper.sources.autodetect import read_inputs
from watchkeeper.sources.base import FieldSelection
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.winjson import WindowsJsonSource

KELVIN = "\u212a"
MIMIKATZ_KEYWORDS = "06d71506-7beb-4f22-8888-e2e5e2ca7fd8"


def test_fields_are_grouped_by_the_routing_column_with_renames_and_references() -> None:
    Step = tuple[Conditions, dict[str, str], list[Node]]
    sysmon: Step = ((("Channel", frozenset({"sysmon"})), ("EventID", frozenset({"1"}))), {},
                    [Match("Image", Op.ENDSWITH, ("\\x.exe",)), Match("ParentImage", Op.FIELDREF, ("Image",))])
    security: Step = ((("Channel", frozenset({"security"})), ("EventID", frozenset({"4688"}))),
                      {"Image": "NewProcessName"}, [Match("Image", Op.EQ, ("a",))])
    anywhere: Step = ((), {}, [Match("Provider_Name", Op.EQ, ("b",)), Match(None, Op.CONTAINS, ("kw",))])
    sel = select_fields([sysmon, security, anywhere])
    assert sel.route == "Channel"
    assert sel.default == {"provider_name"}
    assert sel.by_route["sysmon"] == {"channel", "eventid", "image", "parentimage", "provider_name"}
    # A renamed field is read from its new column, or its own where the new one is absent.
    assert sel.by_route["security"] == {"channel", "eventid", "image", "newprocessname", "provider_name"}
    assert sel.everything == sel.by_route["sysmon"] | sel.by_route["security"]


def _read(data: bytes, selection: FieldSelection | None) -> pa.RecordBatch:
    source = WindowsJsonSource()
    if selection is not None:
        source.select(selection)
    dead = DeadLetter()
    batches = list(source.read(io.BytesIO(data), "mem.json", dead))
    assert dead.count == 0 and len(batches) == 1
    return batches[0]


def test_a_selected_read_keeps_what_rules_and_core_fields_read_and_expands_to_the_full_read() -> None:
    lines = [
        {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Hostname": "ws1", "Image": "C:\\a.exe",
         "Hashes": "MD5=AB,SHA256=CD", "Message": "long text", "tags": ["x", "y"], "RecordNumber": 7},
        {"EventID": 4104, "Channel": "Microsoft-Windows-PowerShell/Operational", "Hostname": "ws1",
         "Message": "Creating Scriptblock text", "ScriptBlockText": "iex", "Data": {"Payload": "p"}},
        {"EventID": 5, "channel": "Odd", "Hostname": "ws2", "Image": "b.exe", "Message": "m"},
    ]
    data = b"\n".join(orjson.dumps(line) for line in lines)
    selection = FieldSelection(
        route="Channel",
        by_route={"microsoft-windows-sysmon/operational": frozenset({"image", "md5"}),
                  "microsoft-windows-powershell/operational": frozenset({"message", "payload"})},
        default=frozenset(),
        everything=frozenset({"image", "md5", "message", "payload"}),
    )
    full = _read(data, None)
    part = _read(data, selection)
    rows = part.to_pylist()
    assert rows[0]["Image"] == "C:\\a.exe" and rows[0]["MD5"] == "AB" and rows[0]["Hashes"] == "MD5=AB,SHA256=CD"
    assert rows[0]["Message"] is None and "tags" not in part.schema.names
    assert rows[1]["Message"] == "Creating Scriptblock text" and rows[1]["Payload"] == "p"
    assert "ScriptBlockText" not in part.schema.names
    # No routing field in the record's spelling: every field any rule reads.
    assert rows[2]["Image"] == "b.exe" and rows[2]["Message"] == "m"
    # The core columns are the full read's, and the records' text gives back every field.
    for name in ("_time", "_host", "_record", "_process", "_outcome"):
        assert part.column(name).equals(full.column(name))
    expanded = WindowsJsonSource.expand(part.column(RAW_COLUMN).to_pylist())
    native = [n for n in full.schema.names if not n.startswith("_")]
    assert expanded.select(native).to_pylist() == full.select(native).to_pylist()


_VALUE = st.text(alphabet=st.sampled_from(["a", "M", "k", KELVIN, "/", "\\", '"', "'", "\t", "\u00e9", " ", ":"]),
                 max_size=10)


def _escaping(value: object) -> str:
    """JSON with `'` and `a` as `\\u` sequences, as PowerShell's `ConvertTo-Json` writes quotes."""
    if not isinstance(value, str):
        return json.dumps(value)
    return '"' + "".join(f"\\u{ord(c):04x}" if c in "'a" else json.dumps(c)[1:-1] for c in value) + '"'


def _writers(record: dict[str, object]) -> list[bytes]:
    """The same record as different JSON writers put it: raw UTF-8, `\\u` escapes, escaped `/`, PowerShell."""
    plain = orjson.dumps(record)
    escaped = "{" + ",".join(f"{json.dumps(k)}:{_escaping(v)}" for k, v in record.items()) + "}"
    return [plain, json.dumps(record, ensure_ascii=True).encode(), plain.replace(b"/", b"\\/"), escaped.encode()]


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(_VALUE, min_size=1, max_size=6),
    keywords=st.lists(st.text(alphabet="aMk/\\\"': ", min_size=1, max_size=4), min_size=1, max_size=3),
    op=st.sampled_from([Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH, Op.EQ]),
    writer=st.integers(0, 3),
)
def test_keywords_over_records_text_agree_with_keywords_over_every_field(
    values: list[str], keywords: list[str], op: Op, writer: int
) -> None:
    records = [{"EventID": i, "Channel": "Security", "Field": v, "Other": v[::-1]} for i, v in enumerate(values)]
    data = b"\n".join(_writers(r)[writer] for r in records)
    nothing = FieldSelection(route="Channel", by_route={}, default=frozenset(), everything=frozenset())
    full = _read(data, None)
    part = _read(data, nothing)
    assert "Field" not in part.schema.names
    leaf = Match(None, op, tuple(k.lower() for k in keywords))
    expected = BatchMatcher(full).evaluate(leaf)
    got = BatchMatcher(BatchColumns(part, expand=WindowsJsonSource.expand)).evaluate(leaf)
    assert np.flatnonzero(got).tolist() == np.flatnonzero(expected).tolist()
    rows = np.array([0, len(values) - 1])
    sub = BatchMatcher(BatchColumns(part, expand=WindowsJsonSource.expand), rows=rows).evaluate(leaf)
    assert sub.tolist() == expected[rows].tolist()


@pytest.mark.parametrize(
    ("record", "keyword"),
    [
        # Values whose Sigma string is not in the text as it stands.
        ({"Tags": [{"k": "v"}]}, '"k":"v'),
        ({"Ratio": 0.00001}, "1e-05"),
        ({"Items": ["alpha", "beta"]}, "alpha\nbeta"),
        ({"Items": ["alpha", 2.5]}, "2.5"),
        # A routing field that is no text: read as a record of unknown channel, not a crash.
        ({"Channel": ["Security"], "Image": "x.exe"}, "x.exe"),
        ({"Channel": {"Name": "Sec1"}, "Image": "x.exe"}, "sec1"),
        ({"Channel": "", "Image": "x.exe"}, "x.exe"),
    ],
)
def test_keywords_find_values_not_written_as_they_read(record: dict[str, object], keyword: str) -> None:
    data = orjson.dumps({"EventID": 1, **record}) + b"\n" + orjson.dumps({"EventID": 2, "Channel": "Security"})
    routed = FieldSelection(route="Channel", by_route={"security": frozenset({"eventid"})},
                            default=frozenset(), everything=frozenset({"image"}))
    full, part = _read(data, None), _read(data, routed)
    leaf = Match(None, Op.CONTAINS, (keyword.lower(),))
    expected = BatchMatcher(full).evaluate(leaf)
    assert expected.tolist() == [True, False]
    got = BatchMatcher(BatchColumns(part, expand=WindowsJsonSource.expand)).evaluate(leaf)
    assert got.tolist() == expected.tolist()


def _otrf_sample(datasets: Path) -> list[Path]:
    root = need(datasets / "security-datasets" / "datasets")
    # Sysmon, Security and PowerShell events, Mimikatz among them (the keyword rule fires).
    names = ("empire_mimikatz_extract_keys", "psh_powershell_httplistener", "empire_psremoting_stager")
    found = [p for p in sorted(root.rglob("*.zip")) if any(n in p.name for n in names)]
    if not found:
        pytest.skip("the OTRF sample archives are absent")
    return found


def test_a_hunt_with_selection_finds_what_a_full_read_finds(datasets: Path) -> None:
    paths = _otrf_sample(datasets)
    rules = [need(datasets / "sigma" / "rules" / "windows")]

    def hunt(select: bool) -> dict[tuple[str, str, int | None], dict[str, object]]:
        found: dict[tuple[str, str, int | None], dict[str, object]] = {}

        def keep(d: Detection) -> None:
            found[(d.rule_id, d.source_file, d.record)] = d.event

        engine = SigmaEngine(load_rules(rules).rules, load_all())
        batches = read_inputs(paths, DeadLetter(), select=engine.selection if select else None)
        run_hunt(HuntOptions(paths=paths, rules=rules), keep, batches=batches)
        return found

    full, selected = hunt(False), hunt(True)
    assert len(full) > 40
    # The keyword rule (`Mimikatz Use`) fires: keywords searched the records' text.
    assert any(rule == MIMIKATZ_KEYWORDS for rule, _, _ in full)
    assert selected.keys() == full.keys()
    # Each event holds the same values; a field spelt two ways in one batch (`ProcessID`,
    # `ProcessId`) is named by its first spelling among the rows converted together.
    for key, event in full.items():
        assert {k.lower(): v for k, v in selected[key].items()} == {k.lower(): v for k, v in event.items()}
