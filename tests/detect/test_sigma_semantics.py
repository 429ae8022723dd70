"""Sigma 2.x detection semantics, case by case, through the real loader, sources and engine.

Every case is a small rule written in Sigma, a handful of Windows events written as evtx_dump
JSON lines, and the exact set of EventRecordIDs that must fire. Most rules use `product: windows`
so every event reaches them and only the detection is under test; the logsource routing and Sigma
filters have their own tests at the end.
"""

from __future__ import annotations

import base64
import itertools
import textwrap
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from watchkeeper.detect.sigma.loader import load_rules
from watchkeeper.hunt import Detection, HuntOptions, run_hunt

SYSMON = "Microsoft-Windows-Sysmon/Operational"
EN_DASH, EM_DASH, HORIZONTAL_BAR = "\u2013", "\u2014", "\u2015"

Event = Mapping[str, Any]  # EventData of one record; "_EventID" / "_Channel" override the System part


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHKEEPER_CACHE", str(tmp_path / "cache"))


def evtx_json(record: int, data: Event, event_id: int = 1, channel: str = SYSMON,
              provider: str = "Microsoft-Windows-Sysmon", computer: str = "ws01.corp.local") -> dict[str, Any]:
    """One record as `evtx_dump -o jsonl` writes it."""
    return {
        "Event": {
            "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
            "System": {
                "Provider": {"#attributes": {"Name": provider}},
                "EventID": event_id,
                "Version": 5,
                "Level": 4,
                "Task": 1,
                "Opcode": 0,
                "Keywords": "0x8000000000000000",
                "TimeCreated": {"#attributes": {"SystemTime": f"2024-03-01T10:00:{record % 60:02d}.000000Z"}},
                "EventRecordID": record,
                "Execution": {"#attributes": {"ProcessID": 3040, "ThreadID": 4012}},
                "Channel": channel,
                "Computer": computer,
                "Security": {"#attributes": {"UserID": "S-1-5-18"}},
            },
            "EventData": dict(data),
        }
    }


def write_events(path: Path, events: Sequence[Event]) -> Path:
    """Records 1..n: Sysmon EventID 1 unless an event says `_EventID` / `_Channel` otherwise."""
    lines = []
    for record, event in enumerate(events, start=1):
        data = {k: v for k, v in event.items() if not k.startswith("_")}
        channel = event.get("_Channel", SYSMON)
        provider = "Microsoft-Windows-Sysmon" if channel == SYSMON else "Microsoft-Windows-Security-Auditing"
        lines.append(orjson.dumps(evtx_json(record, data, int(event.get("_EventID", 1)), channel, provider)))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def sigma_rule(detection: str, logsource: str = "product: windows", title: str = "Case under test",
               rule_id: str | None = None, level: str = "high") -> str:
    """A complete Sigma rule around a `detection:` block (given without the `detection:` key)."""
    return (
        f"title: {title}\n"
        f"id: {rule_id or uuid.uuid4()}\n"
        "status: test\n"
        "description: semantics test\n"
        "author: watchkeeper tests\n"
        "date: 2024-03-01\n"
        "logsource:\n" + textwrap.indent(textwrap.dedent(logsource).strip(), "  ") + "\n"
        "detection:\n" + textwrap.indent(textwrap.dedent(detection).strip(), "  ") + "\n"
        f"level: {level}\n"
    )


def hunt(tmp_path: Path, rules: Mapping[str, str], events: Sequence[Event],
         placeholders: Mapping[str, list[str]] | None = None) -> dict[str, set[int]]:
    """Run the rules over the events with the real hunt pipeline: rule title -> fired record ids."""
    rule_dir = tmp_path / "rules"
    rule_dir.mkdir(exist_ok=True)
    for name, text in rules.items():
        (rule_dir / name).write_text(text, encoding="utf-8")
    events_file = write_events(tmp_path / "events.json", events)
    found: list[Detection] = []
    stats = run_hunt(
        HuntOptions(paths=[events_file], rules=[rule_dir], placeholders=dict(placeholders or {})), found.append
    )
    assert stats.problems == [], stats.problems
    assert stats.dead_letters == 0
    assert stats.events == len(events)
    fired: dict[str, set[int]] = {}
    for det in found:
        assert det.record is not None
        fired.setdefault(det.rule_title, set()).add(det.record)
    return fired


def fires(tmp_path: Path, detection: str, events: Sequence[Event],
          placeholders: Mapping[str, list[str]] | None = None) -> set[int]:
    """The record ids one rule with this detection fires on."""
    fired = hunt(tmp_path, {"rule.yml": sigma_rule(detection)}, events, placeholders)
    assert set(fired) <= {"Case under test"}
    return fired.get("Case under test", set())


def b64_at_offsets(text: bytes) -> list[str]:
    """`text` base64-encoded after 0, 1 and 2 bytes of other data (the three base64 alignments)."""
    return [base64.b64encode(prefix + text + b" -w hidden").decode() for prefix in (b"", b"x", b"xy")]


# --- value modifiers, wildcards, value lists, null, numbers -------------------------------------


CMD = "CommandLine"
_OFFSETS = b64_at_offsets(b"http://evil.example/")
_WIDE = b64_at_offsets("ping".encode("utf-16le"))
_BE = b64_at_offsets("ping".encode("utf-16be"))
_BOM = b64_at_offsets(b"\xff\xfe" + "ping".encode("utf-16le"))

CASES = [
    # contains / startswith / endswith are case-insensitive substring / prefix / suffix tests
    pytest.param(
        "selection:\n  CommandLine|contains: 'shadowcopy delete'\ncondition: selection",
        [{CMD: "wmic SHADOWCOPY DELETE /nointeractive"}, {CMD: "wmic shadowcopy list"},
         {CMD: "shadowcopy delete"}, {"Image": "C:\\shadowcopy delete.exe"}],
        {1, 3}, id="contains",
    ),
    pytest.param(
        "selection:\n  Image|startswith: 'C:\\Users\\'\ncondition: selection",
        [{"Image": "c:\\users\\bob\\a.exe"}, {"Image": "D:\\C:\\Users\\x.exe"}, {"Image": "C:\\Users\\"}],
        {1, 3}, id="startswith",
    ),
    pytest.param(
        "selection:\n  Image|endswith: '\\rundll32.exe'\ncondition: selection",
        [{"Image": "C:\\Windows\\System32\\RUNDLL32.EXE"}, {"Image": "C:\\rundll32.exe.bak"},
         {"Image": "rundll32.exe"}],
        {1}, id="endswith",
    ),
    pytest.param(
        "selection:\n  CommandLine|contains|all:\n    - ' -nop '\n    - ' -enc '\ncondition: selection",
        [{CMD: "powershell -nop -w hidden -enc SQBFAFgA"}, {CMD: "powershell -nop -w hidden"},
         {CMD: "powershell -ENC abc -NOP x"}, {CMD: "powershell -enc abc"}],
        {1, 3}, id="contains-all",
    ),
    pytest.param(
        "selection:\n  CommandLine|endswith|all:\n    - '.ps1'\n    - 'run.ps1'\ncondition: selection",
        [{CMD: "powershell -f run.ps1"}, {CMD: "powershell -f other.ps1"}],
        {1}, id="endswith-all",
    ),
    # regular expressions: case-sensitive, search semantics, flags i / m / s
    pytest.param(
        "selection:\n  Image|re: '\\\\Cmd\\.exe$'\ncondition: selection",
        [{"Image": "C:\\Windows\\Cmd.exe"}, {"Image": "C:\\Windows\\cmd.exe"}, {"Image": "C:\\Cmd.exe.txt"}],
        {1}, id="re-case-sensitive",
    ),
    pytest.param(
        "selection:\n  Image|re|i: '\\\\Cmd\\.exe$'\ncondition: selection",
        [{"Image": "C:\\Windows\\Cmd.exe"}, {"Image": "C:\\Windows\\CMD.EXE"}, {"Image": "C:\\Cmd.exe.txt"}],
        {1, 2}, id="re-i",
    ),
    pytest.param(
        "selection:\n  CommandLine|re: '^whoami$'\ncondition: selection",
        [{CMD: "whoami"}, {CMD: "echo a\nwhoami\nexit"}, {CMD: "whoami /all"}],
        {1}, id="re-anchors-without-m",
    ),
    pytest.param(
        "selection:\n  CommandLine|re|m: '^whoami$'\ncondition: selection",
        [{CMD: "whoami"}, {CMD: "echo a\nwhoami\nexit"}, {CMD: "whoami /all"}],
        {1, 2}, id="re-m",
    ),
    pytest.param(
        "selection:\n  CommandLine|re: 'begin.end'\ncondition: selection",
        [{CMD: "begin-end"}, {CMD: "begin\nend"}],
        {1}, id="re-dot-without-s",
    ),
    pytest.param(
        "selection:\n  CommandLine|re|s: 'begin.end'\ncondition: selection",
        [{CMD: "begin-end"}, {CMD: "begin\nend"}, {CMD: "beginend"}],
        {1, 2}, id="re-s",
    ),
    pytest.param(
        "selection:\n  CommandLine|re: 'powershell(?!.*-NoProfile)'\ncondition: selection",
        [{CMD: "powershell -NoProfile -c x"}, {CMD: "powershell -c x"}, {CMD: "pwsh -c x"}],
        {2}, id="re-lookahead-python-fallback",
    ),
    pytest.param(
        "selection:\n  CommandLine|re: '(\\w)\\1\\1\\1'\ncondition: selection",
        [{CMD: "ping aaaa"}, {CMD: "ping abab"}, {CMD: "net user xx"}],
        {1}, id="re-backreference-python-fallback",
    ),
    pytest.param(
        "selection:\n  CommandLine|re:\n    - 'mimikatz'\n    - 'sekurlsa::\\w+'\ncondition: selection",
        [{CMD: "run mimikatz"}, {CMD: "sekurlsa::logonpasswords"}, {CMD: "Mimikatz"}],
        {1, 2}, id="re-value-list",
    ),
    # cidr
    pytest.param(
        "selection:\n  DestinationIp|cidr: '10.0.0.0/8'\ncondition: selection",
        [{"DestinationIp": "10.1.2.3"}, {"DestinationIp": "11.0.0.1"}, {"DestinationIp": "fe80::1"},
         {"DestinationIp": "not-an-ip"}, {"DestinationIp": "10.255.255.255"}],
        {1, 5}, id="cidr-v4",
    ),
    pytest.param(
        "selection:\n  DestinationIp|cidr:\n    - 'fe80::/10'\n    - '2001:db8::/32'\ncondition: selection",
        [{"DestinationIp": "fe80::1c2:3ff:fe4:5"}, {"DestinationIp": "2001:db8:1::7"},
         {"DestinationIp": "2001:db9::1"}, {"DestinationIp": "10.0.0.1"}],
        {1, 2}, id="cidr-v6",
    ),
    # base64 family
    pytest.param(
        "selection:\n  CommandLine|base64|contains: 'whoami'\ncondition: selection",
        [{CMD: "powershell -enc d2hvYW1p"}, {CMD: "powershell -enc whoami"}],
        {1}, id="base64",
    ),
    pytest.param(
        "selection:\n  CommandLine|base64offset|contains: 'http://evil.example/'\ncondition: selection",
        [{CMD: f"powershell -enc {s}"} for s in _OFFSETS]
        + [{CMD: "powershell -c http://evil.example/"}, {CMD: "powershell -enc " + base64.b64encode(b"x").decode()}],
        {1, 2, 3}, id="base64offset",
    ),
    pytest.param(
        "selection:\n  CommandLine|wide|base64offset|contains: 'ping'\ncondition: selection",
        [{CMD: f"powershell -enc {s}"} for s in _WIDE + _BE],
        {1, 2, 3}, id="wide-base64offset",
    ),
    pytest.param(
        "selection:\n  CommandLine|utf16le|base64offset|contains: 'ping'\ncondition: selection",
        [{CMD: f"powershell -enc {s}"} for s in _WIDE + _BE],
        {1, 2, 3}, id="utf16le-base64offset",
    ),
    pytest.param(
        "selection:\n  CommandLine|utf16be|base64offset|contains: 'ping'\ncondition: selection",
        [{CMD: f"powershell -enc {s}"} for s in _WIDE + _BE],
        {4, 5, 6}, id="utf16be-base64offset",
    ),
    pytest.param(
        "selection:\n  CommandLine|utf16|base64offset|contains: 'ping'\ncondition: selection",
        [{CMD: f"powershell -enc {s}"} for s in _BOM + _BE],
        {1, 2, 3}, id="utf16-bom-base64offset",
    ),
    # windash: '-' stands for '/', en dash, em dash and horizontal bar too
    pytest.param(
        "selection:\n  CommandLine|windash|contains: ' -exec bypass'\ncondition: selection",
        [{CMD: "powershell -exec bypass"}, {CMD: "powershell /exec bypass"},
         {CMD: f"powershell {EN_DASH}exec bypass"}, {CMD: f"powershell {EM_DASH}exec bypass"},
         {CMD: f"powershell {HORIZONTAL_BAR}exec bypass"}, {CMD: "powershell +exec bypass"},
         {CMD: "powershell exec bypass"}],
        {1, 2, 3, 4, 5}, id="windash",
    ),
    pytest.param(
        "selection:\n  CommandLine|windash|contains: ' /c '\ncondition: selection",
        [{CMD: "cmd.exe /c whoami"}, {CMD: "cmd.exe -c whoami"}, {CMD: "cmd.exe c whoami"}],
        {1, 2}, id="windash-slash",
    ),
    # cased
    pytest.param(
        "selection:\n  CommandLine|cased: 'Invoke-Mimikatz'\ncondition: selection",
        [{CMD: "Invoke-Mimikatz"}, {CMD: "invoke-mimikatz"}, {CMD: "Invoke-Mimikatz -x"}],
        {1}, id="cased",
    ),
    pytest.param(
        "selection:\n  CommandLine|contains|cased: 'DumpCreds'\ncondition: selection",
        [{CMD: "Invoke-Mimikatz -DumpCreds"}, {CMD: "invoke-mimikatz -dumpcreds"}],
        {1}, id="contains-cased",
    ),
    # exists
    pytest.param(
        "selection:\n  ParentCommandLine|exists: true\ncondition: selection",
        [{CMD: "a", "ParentCommandLine": "explorer.exe"}, {CMD: "b"}, {CMD: "c", "ParentCommandLine": ""}],
        {1}, id="exists-true",
    ),
    pytest.param(
        "selection:\n  ParentCommandLine|exists: false\ncondition: selection",
        [{CMD: "a", "ParentCommandLine": "explorer.exe"}, {CMD: "b"}, {CMD: "c", "ParentCommandLine": ""}],
        {2, 3}, id="exists-false",
    ),
    # fieldref
    pytest.param(
        "selection:\n  ParentImage|fieldref: Image\ncondition: selection",
        [{"Image": "C:\\a.exe", "ParentImage": "C:\\a.exe"}, {"Image": "C:\\a.exe", "ParentImage": "C:\\b.exe"},
         {"Image": "C:\\A.EXE", "ParentImage": "c:\\a.exe"}, {"Image": "C:\\a.exe"}],
        {1, 3}, id="fieldref",
    ),
    # numeric comparisons: the field parsed as a number, non-numbers never match
    pytest.param(
        "selection:\n  DestinationPort|gt: 1024\ncondition: selection",
        [{"DestinationPort": "1024"}, {"DestinationPort": "1025"}, {"DestinationPort": "80"},
         {"DestinationPort": "http"}, {"DestinationPort": "65535"}, {CMD: "x"}],
        {2, 5}, id="gt",
    ),
    pytest.param(
        "selection:\n  DestinationPort|gte: 1024\ncondition: selection",
        [{"DestinationPort": "1024"}, {"DestinationPort": "1023"}, {"DestinationPort": "9999"},
         {"DestinationPort": "n/a"}],
        {1, 3}, id="gte",
    ),
    pytest.param(
        "selection:\n  DestinationPort|lt: 1024\ncondition: selection",
        [{"DestinationPort": "1024"}, {"DestinationPort": "1023"}, {"DestinationPort": "0"},
         {"DestinationPort": "-"}],
        {2, 3}, id="lt",
    ),
    pytest.param(
        "selection:\n  DestinationPort|lte: 1024\ncondition: selection",
        [{"DestinationPort": "1024"}, {"DestinationPort": "1025"}, {"DestinationPort": "22"}],
        {1, 3}, id="lte",
    ),
    # wildcards inside values, and an escaped wildcard
    pytest.param(
        r"""
        selection:
          Image: 'C:\Windows\\*\cmd.exe'
        condition: selection
        """,
        [{"Image": "C:\\Windows\\System32\\cmd.exe"}, {"Image": "C:\\Windows\\SysWOW64\\CMD.exe"},
         {"Image": "C:\\Windows\\cmd.exe"}, {"Image": "D:\\Windows\\System32\\cmd.exe"}],
        {1, 2}, id="wildcard-star-inside",
    ),
    pytest.param(
        "selection:\n  Image: '*\\cm?.exe'\ncondition: selection",
        [{"Image": "C:\\Windows\\cmd.exe"}, {"Image": "C:\\Windows\\cmX.exe"}, {"Image": "C:\\Windows\\cm.exe"},
         {"Image": "C:\\Windows\\cmdd.exe"}],
        {1, 2}, id="wildcard-question-mark",
    ),
    pytest.param(
        "selection:\n  CommandLine: 'echo \\*'\ncondition: selection",
        [{CMD: "echo *"}, {CMD: "echo hello"}, {CMD: "echo \\*"}],
        {1}, id="escaped-star",
    ),
    pytest.param(
        "selection:\n  CommandLine|contains: 'a?b'\ncondition: selection",
        [{CMD: "xx a1b yy"}, {CMD: "xx ab yy"}, {CMD: "A-B"}],
        {1, 3}, id="contains-with-question-mark",
    ),
    pytest.param(
        "selection:\n  CommandLine: 'net user'\ncondition: selection",
        [{CMD: "net user"}, {CMD: "NET USER"}, {CMD: "net user /add"}, {CMD: "xnet user"}],
        {1, 2}, id="plain-equality",
    ),
    # lists of values are an OR; lists of maps are an OR of ANDs
    pytest.param(
        "selection:\n  Image|endswith:\n    - '\\certutil.exe'\n    - '\\bitsadmin.exe'\ncondition: selection",
        [{"Image": "C:\\certutil.exe"}, {"Image": "C:\\bitsadmin.exe"}, {"Image": "C:\\curl.exe"}],
        {1, 2}, id="value-list-or",
    ),
    pytest.param(
        """
        selection:
          - Image|endswith: '\\certutil.exe'
            CommandLine|contains: 'urlcache'
          - Image|endswith: '\\bitsadmin.exe'
            CommandLine|contains: '/transfer'
        condition: selection
        """,
        [{"Image": "C:\\certutil.exe", CMD: "certutil -urlcache -f http://x"},
         {"Image": "C:\\certutil.exe", CMD: "bitsadmin /transfer"},
         {"Image": "C:\\bitsadmin.exe", CMD: "bitsadmin /transfer j http://x"},
         {"Image": "C:\\bitsadmin.exe", CMD: "certutil -urlcache"}],
        {1, 3}, id="list-of-maps",
    ),
    pytest.param(
        """
        selection:
          Image|endswith: '\\reg.exe'
          CommandLine|contains: 'save'
        condition: selection
        """,
        [{"Image": "C:\\reg.exe", CMD: "reg save hklm\\sam"}, {"Image": "C:\\reg.exe", CMD: "reg query"},
         {"Image": "C:\\x.exe", CMD: "reg save"}],
        {1}, id="map-is-and",
    ),
    # keywords: a value not bound to a field matches when any field contains it
    pytest.param(
        "keywords:\n  - 'mimikatz'\n  - 'sekurlsa'\ncondition: keywords",
        [{CMD: "C:\\tools\\MIMIKATZ.exe"}, {"ParentImage": "sekurlsa.exe"}, {CMD: "notepad"}],
        {1, 2}, id="keywords",
    ),
    pytest.param(
        "keywords:\n  '|all':\n    - 'lsass'\n    - 'dump'\ncondition: keywords",
        [{CMD: "procdump lsass.exe"}, {"Image": "lsass.exe", CMD: "minidump"}, {CMD: "lsass"}],
        {1, 2}, id="keywords-all",
    ),
    # null and empty values: absent or empty
    pytest.param(
        "selection:\n  Image|endswith: '\\cmd.exe'\n  CommandLine: null\ncondition: selection",
        [{"Image": "C:\\cmd.exe"}, {"Image": "C:\\cmd.exe", CMD: ""}, {"Image": "C:\\cmd.exe", CMD: "cmd"}],
        {1, 2}, id="null",
    ),
    pytest.param(
        "selection:\n  Image|endswith: '\\cmd.exe'\n  CommandLine: ''\ncondition: selection",
        [{"Image": "C:\\cmd.exe"}, {"Image": "C:\\cmd.exe", CMD: ""}, {"Image": "C:\\cmd.exe", CMD: "cmd"}],
        {1, 2}, id="empty-string",
    ),
    pytest.param(
        "selection:\n  Image|endswith: '\\cmd.exe'\nfilter:\n  CommandLine: null\ncondition: selection and not filter",
        [{"Image": "C:\\cmd.exe"}, {"Image": "C:\\cmd.exe", CMD: ""}, {"Image": "C:\\cmd.exe", CMD: "cmd"}],
        {3}, id="not-null",
    ),
    # numbers and booleans as values
    pytest.param(
        "selection:\n  EventID: 1\n  LogonType: 3\ncondition: selection",
        [{"LogonType": 3}, {"LogonType": "3"}, {"LogonType": 10}, {"LogonType": "03"}],
        {1, 2}, id="numbers",
    ),
    pytest.param(
        "selection:\n  Enabled: true\ncondition: selection",
        [{"Enabled": True}, {"Enabled": "true"}, {"Enabled": "True"}, {"Enabled": False}, {CMD: "true"}],
        {1, 2, 3}, id="boolean-true",
    ),
    pytest.param(
        "selection:\n  Enabled: false\ncondition: selection",
        [{"Enabled": True}, {"Enabled": False}, {"Enabled": "FALSE"}],
        {2, 3}, id="boolean-false",
    ),
    # field names resolve case-insensitively
    pytest.param(
        "selection:\n  commandline|contains: 'whoami'\ncondition: selection",
        [{CMD: "whoami"}, {"Image": "whoami.exe"}],
        {1}, id="field-name-case",
    ),
]


@pytest.mark.parametrize(("detection", "events", "expected"), CASES)
def test_value_semantics(tmp_path: Path, detection: str, events: list[Event], expected: set[int]) -> None:
    assert fires(tmp_path, detection, events) == expected


# --- conditions ---------------------------------------------------------------------------------

_COND_EVENTS: list[Event] = [
    {"Image": "C:\\a.exe", CMD: "alpha"},            # 1: sel_a
    {"Image": "C:\\b.exe", CMD: "beta"},             # 2: sel_b
    {"Image": "C:\\a.exe", CMD: "beta"},             # 3: sel_a, sel_b
    {"Image": "C:\\c.exe", CMD: "gamma"},            # 4: other
    {"Image": "C:\\a.exe", CMD: "beta gamma"},       # 5: sel_a, sel_b, other
    {"Image": "C:\\z.exe", CMD: "zeta"},             # 6: nothing
]
_SELECTIONS = """
sel_a:
  Image|endswith: '\\a.exe'
sel_b:
  CommandLine|contains: 'beta'
other:
  CommandLine|contains: 'gamma'
"""

CONDITIONS = [
    pytest.param("1 of sel_*", {1, 2, 3, 5}, id="1-of-prefix"),
    pytest.param("all of sel_*", {3, 5}, id="all-of-prefix"),
    pytest.param("1 of them", {1, 2, 3, 4, 5}, id="1-of-them"),
    pytest.param("all of them", {5}, id="all-of-them"),
    pytest.param("not sel_a", {2, 4, 6}, id="not"),
    pytest.param("sel_a and not sel_b", {1}, id="and-not"),
    pytest.param("sel_a or sel_b and other", {1, 3, 5}, id="and-binds-tighter-than-or"),
    pytest.param("(sel_a or sel_b) and other", {5}, id="parentheses"),
    pytest.param("not (sel_a or other)", {2, 6}, id="not-parentheses"),
    pytest.param("not sel_a and not sel_b", {4, 6}, id="not-binds-tighter-than-and"),
    pytest.param("1 of sel_* and not other", {1, 2, 3}, id="1-of-and-not"),
    pytest.param("all of sel_* or other", {3, 4, 5}, id="all-of-or"),
    pytest.param("not 1 of sel_*", {4, 6}, id="not-1-of"),
    pytest.param(["sel_a and sel_b", "other"], {3, 4, 5}, id="multiple-conditions"),
]


@pytest.mark.parametrize(("condition", "expected"), CONDITIONS)
def test_conditions(tmp_path: Path, condition: str | list[str], expected: set[int]) -> None:
    if isinstance(condition, str):
        cond = f"condition: {condition}"
    else:
        cond = "condition:\n" + "".join(f"  - {c}\n" for c in condition)
    assert fires(tmp_path, _SELECTIONS + cond, _COND_EVENTS) == expected


def test_not_of_a_leaf_on_an_absent_field_is_true(tmp_path: Path) -> None:
    # SIEM semantics: a test on an absent field is false, so its negation holds.
    detection = """
    selection:
      Image|endswith: '\\cmd.exe'
    filter:
      ParentImage|endswith: '\\explorer.exe'
    condition: selection and not filter
    """
    events = [{"Image": "C:\\cmd.exe", "ParentImage": "C:\\explorer.exe"}, {"Image": "C:\\cmd.exe"},
              {"Image": "C:\\cmd.exe", "ParentImage": "C:\\services.exe"}]
    assert fires(tmp_path, detection, events) == {2, 3}


# --- expand and placeholders ---------------------------------------------------------------------

_EXPAND = """
selection:
  User|expand: '%admins%'
condition: selection
"""
_EXPAND_EVENTS: list[Event] = [{"User": "CORP\\alice"}, {"User": "CORP\\bob"}, {"User": "corp\\ALICE"},
                               {"User": "CORP\\mallory"}]


def test_expand_with_configured_placeholder(tmp_path: Path) -> None:
    placeholders = {"admins": ["CORP\\alice", "CORP\\bob"]}
    assert fires(tmp_path, _EXPAND, _EXPAND_EVENTS, placeholders) == {1, 2, 3}


def test_expand_inside_a_value(tmp_path: Path) -> None:
    # `\\` is an escaped backslash, so this is `*` + `\\` + %share% + `\` + `*`.
    detection = r"""
    selection:
      CommandLine|expand: '*\\\\%share%\\*'
    condition: selection
    """
    events = [{CMD: "copy \\\\fs01\\payroll\\x.xlsx"}, {CMD: "copy \\\\fs02\\public\\x"}, {CMD: "dir \\\\FS02\\HR\\"}]
    assert fires(tmp_path, detection, events, {"share": ["fs01", "fs02\\hr"]}) == {1, 3}


def test_expand_without_placeholder_values_is_unsupported(tmp_path: Path) -> None:
    (tmp_path / "rule.yml").write_text(sigma_rule(_EXPAND, title="Admins"), encoding="utf-8")
    ruleset = load_rules([tmp_path / "rule.yml"])
    assert ruleset.rules == []
    [problem] = ruleset.problems
    assert problem.kind == "unsupported"
    assert problem.title == "Admins"
    assert "admins" in problem.reason
    # With values for another placeholder only, it is still unsupported.
    assert load_rules([tmp_path / "rule.yml"], placeholders={"other": ["x"]}).problems[0].kind == "unsupported"


# --- logsource routing ------------------------------------------------------------------------------

_ROUTING_EVENTS: list[Event] = [
    {"Image": "C:\\Windows\\System32\\whoami.exe", CMD: "whoami /all"},                      # 1 Sysmon 1
    {"_EventID": 4688, "_Channel": "Security", "NewProcessName": "C:\\Windows\\System32\\whoami.exe",
     CMD: "whoami /all", "ParentProcessName": "C:\\Windows\\System32\\cmd.exe"},                # 2 Security 4688
    {"_EventID": 3, "Image": "C:\\Windows\\System32\\whoami.exe", "DestinationIp": "10.0.0.1"},  # 3 Sysmon 3
    {"_EventID": 4624, "_Channel": "Security", "TargetUserName": "whoami", "LogonType": 3},      # 4 Security 4624
    {"_EventID": 4688, "_Channel": "Security", "NewProcessName": "C:\\Windows\\notepad.exe"},    # 5 Security 4688
]


def test_logsource_routing(tmp_path: Path) -> None:
    rules = {
        "proc.yml": sigma_rule(
            "selection:\n  Image|endswith: '\\whoami.exe'\ncondition: selection",
            logsource="category: process_creation\nproduct: windows", title="process_creation"),
        "parent.yml": sigma_rule(
            "selection:\n  ParentImage|endswith: '\\cmd.exe'\ncondition: selection",
            logsource="category: process_creation\nproduct: windows", title="parent image renamed"),
        "security.yml": sigma_rule(
            "keywords:\n  - 'whoami'\ncondition: keywords",
            logsource="product: windows\nservice: security", title="security service"),
        "sysmon.yml": sigma_rule(
            "keywords:\n  - 'whoami'\ncondition: keywords",
            logsource="product: windows\nservice: sysmon", title="sysmon service"),
        "net.yml": sigma_rule(
            "selection:\n  Image|endswith: '\\whoami.exe'\ncondition: selection",
            logsource="category: network_connection\nproduct: windows", title="network_connection"),
        "any.yml": sigma_rule(
            "keywords:\n  - 'whoami'\ncondition: keywords", title="any windows"),
        "linux.yml": sigma_rule(
            "keywords:\n  - 'whoami'\ncondition: keywords",
            logsource="category: process_creation\nproduct: linux", title="linux"),
    }
    assert hunt(tmp_path, rules, _ROUTING_EVENTS) == {
        "process_creation": {1, 2},  # Sysmon 1, and Security 4688 with Image read from NewProcessName
        "parent image renamed": {2},
        "security service": {2, 4},
        "sysmon service": {1, 3},
        "network_connection": {3},
        "any windows": {1, 2, 3, 4},
    }


def test_native_field_of_4688_is_still_readable(tmp_path: Path) -> None:
    rules = {"native.yml": sigma_rule(
        "selection:\n  NewProcessName|endswith: '\\notepad.exe'\ncondition: selection",
        logsource="category: process_creation\nproduct: windows", title="native")}
    assert hunt(tmp_path, rules, _ROUTING_EVENTS) == {"native": {5}}


# --- Sigma filters ------------------------------------------------------------------------------------

_FILTERED_RULE_ID = "6f3b1c4e-2a1d-4c2e-9b8a-5d7e1f0a9c31"


def _filter_rule(reference: str) -> str:
    """A Sigma filter as the specification writes it: the condition says which events to keep."""
    return (
        "title: Known admin tools\n"
        "id: 0c5e7a52-7c1b-4f0e-8d0a-2b9c6f1e4d77\n"
        "description: Excludes the IT department's jump host\n"
        "logsource:\n"
        "  category: process_creation\n"
        "  product: windows\n"
        "filter:\n"
        "  rules:\n"
        f"    - {reference}\n"
        "  selection:\n"
        "    ParentImage|endswith: '\\jumphost-agent.exe'\n"
        "  condition: not selection\n"
    )


@pytest.mark.parametrize("reference", [
    pytest.param(_FILTERED_RULE_ID, id="by-id"),
    pytest.param("whoami_execution", id="by-name"),
])
def test_sigma_filter_removes_filtered_events(tmp_path: Path, reference: str) -> None:
    rule = sigma_rule("selection:\n  Image|endswith: '\\whoami.exe'\ncondition: selection",
                      logsource="category: process_creation\nproduct: windows", title="Whoami",
                      rule_id=_FILTERED_RULE_ID)
    rule = rule.replace("status: test\n", "name: whoami_execution\nstatus: test\n")
    other = sigma_rule("selection:\n  Image|endswith: '\\whoami.exe'\ncondition: selection",
                       logsource="category: process_creation\nproduct: windows", title="Other whoami")
    events = [
        {"Image": "C:\\whoami.exe", "ParentImage": "C:\\Program Files\\IT\\jumphost-agent.exe"},
        {"Image": "C:\\whoami.exe", "ParentImage": "C:\\Windows\\explorer.exe"},
        {"Image": "C:\\whoami.exe"},
    ]
    fired = hunt(tmp_path, {"rule.yml": rule, "other.yml": other, "filter.yml": _filter_rule(reference)},
                 events)
    assert fired == {"Whoami": {2, 3}, "Other whoami": {1, 2, 3}}


def test_many_rules_share_work_without_mixing_results(tmp_path: Path) -> None:
    # Equal leaves in many rules are computed once; each rule must still get its own rows.
    rules = {
        f"r{i}.yml": sigma_rule(f"selection:\n  CommandLine|contains: '{word}'\ncondition: selection",
                                title=f"rule {word}")
        for i, word in enumerate(["alpha", "beta", "gamma", "alp", "ta g"])
    }
    events = [{CMD: "alpha"}, {CMD: "beta gamma"}, {CMD: "gamma"}, {CMD: "x"}]
    assert hunt(tmp_path, rules, events) == {
        "rule alpha": {1}, "rule beta": {2}, "rule gamma": {2, 3}, "rule alp": {1}, "rule ta g": {2},
    }


def test_case_list_covers_every_modifier() -> None:
    # The parametrised cases must keep naming every Sigma 2.x value modifier they exercise.
    text = "\n".join(str(p.values[0]) for p in CASES)
    modifiers = ["contains", "startswith", "endswith", "all", "re", "i", "m", "s", "cidr", "base64",
                 "base64offset", "windash", "wide", "utf16le", "utf16be", "utf16", "cased", "exists",
                 "fieldref", "gt", "gte", "lt", "lte"]
    missing = [m for m in modifiers if f"|{m}:" not in text and f"|{m}|" not in text]
    assert missing == []
    assert len({p.id for p in itertools.chain(CASES, CONDITIONS)}) == len(CASES) + len(CONDITIONS)
