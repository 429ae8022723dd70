"""Bad input for every line-oriented source through `watchkeeper ingest`: reported, dead-lettered, rest kept.

Each case writes one file of seven lines for one source: good records on the odd lines, and
between them a record holding a latin-1 byte (line 2), a line of 10 MiB (line 4) and a line the
source cannot read (line 6: a JSON array for the JSON sources, a short row for Zeek TSV, garbage
for the text sources). The same content, gzip-compressed and cut short, is a second input; a
2 MiB line right after the first record is a third.
"""

from __future__ import annotations

import base64
import gzip
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.cli.invoking import query, run
from watchkeeper.lake.layout import view_name
from watchkeeper.sources import load_all

#: Line 4 of every file: a line of 10 MiB.
BIG = 10 << 20
#: The word each good line carries; line 2's holds a latin-1 byte, not valid UTF-8.
WORDS = {1: b"alpha", 2: b"caf\xe9", 3: b"bravo", 5: b"charlie", 7: b"delta"}
#: A dead-letter entry stays small whatever the line it reports.
ENTRY_LIMIT = 16 * 1024
#: Where the gzip copy is cut, as a share of its compressed bytes.
CUT = 0.6
#: An over-long line for the text sources' limit (1 MiB), short enough to be read whole elsewhere.
LONG = 2 << 20

def filled(template: bytes) -> Callable[[int, bytes], bytes]:
    """Good lines from a template: `@I@` becomes the line number, `@W@` the word."""
    return lambda i, word: template.replace(b"@I@", str(i).encode()).replace(b"@W@", word)


def json_filled(template: dict[str, Any]) -> Callable[[int, bytes], bytes]:
    """Good JSON lines from an object whose strings hold `@I@` and `@W@`."""
    return filled(orjson.dumps(template))


@dataclass(frozen=True)
class Case:
    """One source: its good lines, its own bad line, and what it does with a byte that is not UTF-8."""

    id: str
    filename: str
    reader: str  # the registered source that reads the file (`zeek` for every `zeek.<type>`)
    source: str  # the `source` its events land under in the lake
    good: Callable[[int, bytes], bytes]
    bad: bytes
    #: Text sources keep a line with a bad byte (U+FFFD in its place) and report it `kept`;
    #: JSON sources dead-letter it: invalid UTF-8 is not JSON.
    keeps_bad_utf8: bool
    header: bytes = b""
    args: tuple[str, ...] = ()

    def lines(self) -> list[bytes]:
        """The seven lines of the body, in order."""
        good = {i: self.good(i, word) for i, word in WORDS.items()}
        return [good[1], good[2], good[3], b"x" * BIG, good[5], self.bad, good[7]]

    def content(self) -> bytes:
        """The whole file: header, then the body."""
        return self.header + b"".join(line + b"\n" for line in self.lines())

    @property
    def offset(self) -> int:
        """Lines before the body (a Zeek `#` header, a CSV header), counted in record numbers."""
        return self.header.count(b"\n")


JSON_ARRAY = b"[1, 2]"
#: Every text source dead-letters it: syslog (no timestamp and host), auditd (no `type=… msg=audit(…)`),
#: web access (not the common/combined format), mapped CSV (one field where the header names three).
GARBAGE = b"this is not a log line at all"
MAPPING = ("--map", "time=when", "--map", "user=who", "--map-source", "firewall")
ZEEK_HEADER = (
    b"#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    b"#fields\tts\tuid\tid.orig_h\tid.resp_h\tservice\n"
    b"#types\ttime\tstring\taddr\taddr\tstring\n"
)

CASES = [
    Case(
        "linux.auth",
        "auth.log",
        "linux.auth",
        "linux.auth",
        filled(
            b"2024-03-01T10:00:0@I@Z host1 sshd[100@I@]: Failed password for invalid user @W@ from 10.0.0.@I@ port 22 ssh2"
        ),
        GARBAGE,
        keeps_bad_utf8=True,
    ),
    Case(
        "linux.syslog",
        "syslog",
        "linux.syslog",
        "linux.syslog",
        filled(b"2024-03-01T10:00:0@I@Z host1 kernel: usb 1-@I@: new device named @W@"),
        GARBAGE,
        keeps_bad_utf8=True,
    ),
    Case(
        "linux.auditd",
        "audit.log",
        "linux.auditd",
        "linux.auditd",
        filled(
            b"type=USER_LOGIN msg=audit(1709287200.00@I@:10@I@): pid=1 uid=0 auid=4294967295 ses=1 "
            b'msg=\'op=login acct="@W@" exe="/usr/sbin/sshd" hostname=? addr=10.0.0.@I@ terminal=ssh res=failed\''
        ),
        GARBAGE,
        keeps_bad_utf8=True,
    ),
    Case(
        "aws.cloudtrail",
        "cloudtrail.json",
        "aws.cloudtrail",
        "aws.cloudtrail",
        json_filled(
            {
                "eventVersion": "1.08",
                "eventTime": "2024-03-01T10:00:0@I@Z",
                "eventSource": "s3.amazonaws.com",
                "eventName": "GetObject",
                "awsRegion": "eu-west-1",
                "sourceIPAddress": "198.51.100.@I@",
                "eventID": "00000000-0000-0000-0000-00000000000@I@",
                "userIdentity": {"type": "IAMUser", "userName": "@W@"},
            }
        ),
        JSON_ARRAY,
        keeps_bad_utf8=False,
    ),
    Case(
        "m365.audit",
        "audit.json",
        "m365.audit",
        "m365.audit",
        json_filled(
            {
                "CreationTime": "2024-03-01T10:15:0@I@",
                "Id": "6f0b1c2d-0000-4000-8000-00000000000@I@",
                "Operation": "UserLoggedIn",
                "OrganizationId": "11111111-2222-3333-4444-555555555555",
                "RecordType": 15,
                "ResultStatus": "Success",
                "Workload": "AzureActiveDirectory",
                "ClientIP": "203.0.113.@I@:50123",
                "UserId": "@W@@contoso.com",
            }
        ),
        JSON_ARRAY,
        keeps_bad_utf8=False,
    ),
    Case(
        "azure.entra",
        "signins.json",
        "azure.entra",
        "azure.signinlogs",
        json_filled(
            {
                "id": "66ea54eb-6301-4ee5-be62-ff5a759b010@I@",
                "createdDateTime": "2024-03-01T10:15:0@I@Z",
                "userDisplayName": "@W@",
                "userPrincipalName": "alice@contoso.com",
                "appDisplayName": "Azure Portal",
                "ipAddress": "203.0.113.@I@",
                "clientAppUsed": "Browser",
                "status": {"errorCode": 50126, "failureReason": "Invalid username or password."},
            }
        ),
        JSON_ARRAY,
        keeps_bad_utf8=False,
    ),
    Case(
        "azure.activitylogs",
        "activity.json",
        "azure.activitylogs",
        "azure.activitylogs",
        json_filled(
            {
                "time": "2024-03-01T12:00:0@I@.0000000Z",
                "resourceId": "/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/FIREWALLPOLICIES/FW1",
                "operationName": "MICROSOFT.NETWORK/FIREWALLPOLICIES/WRITE",
                "category": "Administrative",
                "resultType": "Success",
                "callerIpAddress": "203.0.113.@I@",
                "correlationId": "c@I@",
                "identity": {"claims": {"name": "@W@@contoso.com"}},
            }
        ),
        JSON_ARRAY,
        keeps_bad_utf8=False,
    ),
    Case(
        "gcp.audit",
        "gcp.json",
        "gcp.audit",
        "gcp.audit",
        json_filled(
            {
                "protoPayload": {
                    "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                    "authenticationInfo": {"principalEmail": "@W@@example.com"},
                    "requestMetadata": {"callerIp": "203.0.113.@I@"},
                    "serviceName": "iam.googleapis.com",
                    "methodName": "google.iam.admin.v1.CreateServiceAccountKey",
                },
                "insertId": "abc@I@",
                "resource": {"type": "service_account", "labels": {"project_id": "proj-1"}},
                "timestamp": "2024-03-01T13:00:0@I@.123456Z",
                "logName": "projects/proj-1/logs/cloudaudit.googleapis.com%2Factivity",
            }
        ),
        JSON_ARRAY,
        keeps_bad_utf8=False,
    ),
    Case(
        "zeek.json",
        "conn.log",
        "zeek",
        "zeek.conn",
        json_filled(
            {
                "_path": "conn",
                "ts": "1709287200.@I@",
                "uid": "C@I@abcdef",
                "id.orig_h": "10.0.0.@I@",
                "id.resp_h": "10.0.0.254",
                "service": "@W@",
            }
        ),
        JSON_ARRAY,
        keeps_bad_utf8=False,
    ),
    Case(
        "zeek.tsv",
        "conn.log",
        "zeek",
        "zeek.conn",
        filled(b"1709287200.@I@\tC@I@abcdef\t10.0.0.@I@\t10.0.0.254\t@W@"),
        b"1709287200.6\tC6abcdef",  # two columns where #fields names five
        keeps_bad_utf8=True,  # TSV is text: the row is kept with U+FFFD (`zeek._LineGuard`)
        header=ZEEK_HEADER,
    ),
    Case(
        "web.access.combined",
        "access.log",
        "web.access",
        "web.access",
        filled(
            b'10.0.0.@I@ - @W@ [01/Mar/2024:10:00:0@I@ +0000] "GET /index.html HTTP/1.1" 200 512 "-" "curl/8"'
        ),
        GARBAGE,
        keeps_bad_utf8=True,
    ),
    Case(
        "web.access.json",
        "access.json",
        "web.access",
        "web.access",
        json_filled(
            {
                "time_iso8601": "2024-03-01T10:00:0@I@+00:00",
                "remote_addr": "10.0.0.@I@",
                "remote_user": "@W@",
                "request": "GET /index.html HTTP/1.1",
                "status": 200,
                "body_bytes_sent": 512,
            }
        ),
        JSON_ARRAY,
        keeps_bad_utf8=False,  # each line is read as JSON (`webaccess._json_row`)
    ),
    Case(
        "windows.winlogbeat",
        "winlogbeat.json",
        "windows.winlogbeat",
        "windows.winlogbeat",
        json_filled(
            {
                "@timestamp": "2024-03-01T14:00:0@I@.000Z",
                "event": {"code": "1", "provider": "Microsoft-Windows-Sysmon", "action": "Process Create"},
                "host": {"name": "ws01.contoso.local"},
                "winlog": {
                    "channel": "Microsoft-Windows-Sysmon/Operational",
                    "computer_name": "WS01.contoso.local",
                    "event_id": "1",
                    "provider_name": "Microsoft-Windows-Sysmon",
                    "record_id": "424@I@",
                    "event_data": {
                        "Image": "C:\\Windows\\System32\\cmd.exe",
                        "CommandLine": "cmd /c echo @W@",
                    },
                },
            }
        ),
        JSON_ARRAY,
        keeps_bad_utf8=False,
    ),
    Case(
        "windows.json",
        "security.json",
        "windows.json",
        "windows.json",
        # No RecordNumber: the line numbers the record, as the other sources' do.
        json_filled(
            {
                "EventID": 4625,
                "Channel": "Security",
                "Hostname": "dc1",
                "EventTime": "2024-03-01 10:00:0@I@",
                "TargetUserName": "@W@",
                "IpAddress": "10.0.0.@I@",
            }
        ),
        JSON_ARRAY,
        keeps_bad_utf8=False,
    ),
    Case(
        "mapped.csv",
        "firewall.csv",
        "mapped",
        "firewall",
        filled(b"2024-03-01T10:00:0@I@Z,@W@,10.0.0.@I@"),
        GARBAGE,  # one field where the header names three
        keeps_bad_utf8=True,  # CSV is text: decoded with U+FFFD (`mapped.MappedSource._csv`)
        header=b"when,who,ip\n",
        args=(*MAPPING, "--map-format", "csv"),
    ),
    Case(
        "mapped.jsonl",
        "firewall.jsonl",
        "mapped",
        "firewall",
        json_filled({"when": "2024-03-01T10:00:0@I@Z", "who": "@W@", "ip": "10.0.0.@I@"}),
        JSON_ARRAY,
        keeps_bad_utf8=False,
        args=(*MAPPING, "--map-format", "jsonl"),
    ),
]


def ingest(path: Path, lake: Path, dead: Path, case: Case) -> Any:
    """`watchkeeper ingest PATH --lake LAKE --dead-letter DEAD` with the case's own options."""
    return run("ingest", str(path), "--lake", str(lake), "--dead-letter", str(dead), *case.args)


def records(lake: Path) -> dict[str, list[int]]:
    """Record numbers in the lake, per source."""
    rows = query(lake, "SELECT source, record FROM events ORDER BY source, record")
    out: dict[str, list[int]] = {}
    for row in rows:
        out.setdefault(row["source"], []).append(row["record"])
    return out


def dead_letters(path: Path) -> list[dict[str, Any]]:
    """The entries of a dead-letter file."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def reported(entries: list[dict[str, Any]]) -> list[tuple[int, bool]]:
    """(record, kept) of each entry, sorted; a whole-file entry has record -1."""
    return sorted((-1 if e["record"] is None else e["record"], bool(e.get("kept"))) for e in entries)


def reported_size(entry: dict[str, Any]) -> int | None:
    """The size a dead-letter entry gives for its line: in its reason, else the raw's original length."""
    m = re.search(r"line of (\d+) bytes", entry["reason"])
    return int(m.group(1)) if m else entry.get("truncated_from")


def test_every_line_source_has_a_case() -> None:
    """Every registered source but binary EVTX is covered here (each `zeek.<type>` by Zeek's cases)."""
    registered = {"zeek" if name.startswith("zeek.") else name for name in load_all()}
    assert registered - {"windows.evtx"} == {case.reader for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_lines_are_reported_and_the_rest_ingested(tmp_path: Path, case: Case) -> None:
    """Good records land under the source; lines 2, 4 and 6 are reported by number; twice adds nothing."""
    folder, lake, dead = tmp_path / "plain", tmp_path / "lake", tmp_path / "dead.jsonl"
    folder.mkdir()
    path = folder / case.filename
    path.write_bytes(case.content())
    result = ingest(path, lake, dead, case)

    n = case.offset
    kept = case.keeps_bad_utf8
    expected = sorted(n + i for i in (1, 3, 5, 7, *((2,) if kept else ())))
    assert records(lake) == {case.source: expected}

    entries = dead_letters(dead)
    assert {e["file"] for e in entries} == {str(path)}
    assert reported(entries) == [(n + 2, kept), (n + 4, False), (n + 6, False)]
    by_record = {e["record"]: e for e in entries}
    assert base64.b64decode(by_record[n + 2]["raw_base64"]) == case.lines()[1]
    huge = by_record[n + 4]
    assert len(orjson.dumps(huge)) < ENTRY_LIMIT
    assert (reported_size(huge) or 0) >= BIG, huge["reason"]
    assert by_record[n + 6]["reason"]

    unreadable = 2 if kept else 3
    assert f"{path}: {unreadable} unreadable record(s), see {dead}" in result.stderr
    if kept:
        assert f"{path}: 1 record(s) not valid UTF-8, ingested with replacement characters" in result.stderr
        (row,) = query(lake, f'SELECT * FROM "{view_name(case.source)}" WHERE "_record" = {n + 2}')
        assert any(isinstance(v, str) and "caf\ufffd" in v for v in row.values()), row
    else:
        assert "not valid UTF-8, ingested" not in result.stderr

    # The same file again: nothing new in the lake, the same bad lines reported.
    again = tmp_path / "again.jsonl"
    ingest(path, lake, again, case)
    assert records(lake) == {case.source: expected}
    assert reported(dead_letters(again)) == reported(entries)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_truncated_gzip_keeps_what_came_before_the_cut(tmp_path: Path, case: Case) -> None:
    """A gzip copy cut mid-stream: exit 0, the lines before the cut ingested, the damage dead-lettered."""
    content = case.content()
    packed = gzip.compress(content, compresslevel=6)
    cut = packed[: int(len(packed) * CUT)]
    # The cut falls inside line 4 (the 10 MiB line), more than a MiB into it: lines 1-3 are whole.
    before = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut)
    head = len(case.header) + sum(len(line) + 1 for line in case.lines()[:3])
    assert head + (1 << 20) < len(before) < head + BIG

    folder, lake, dead = tmp_path / "gz", tmp_path / "lake", tmp_path / "dead.jsonl"
    folder.mkdir()
    path = folder / f"{case.filename}.gz"
    path.write_bytes(cut)
    result = ingest(path, lake, dead, case)

    n = case.offset
    kept = case.keeps_bad_utf8
    assert records(lake) == {case.source: sorted(n + i for i in (1, 3, *((2,) if kept else ())))}

    member = f"{path}!{case.filename}"
    entries = dead_letters(dead)
    assert {e["file"] for e in entries} == {member}
    # Line 2 as in the plain file, the cut-off line 4, and the damage itself (no record number).
    assert reported(entries) == [(-1, False), (n + 2, kept), (n + 4, False)]
    (damage,) = [e for e in entries if e["record"] is None]
    assert "damaged" in damage["reason"] and "truncated" in damage["reason"], damage["reason"]
    assert all(len(orjson.dumps(e)) < ENTRY_LIMIT for e in entries)
    unreadable = 2 if kept else 3
    assert f"{member}: {unreadable} unreadable record(s), see {dead}" in result.stderr


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_an_over_long_second_line_is_reported_alone_with_its_size(tmp_path: Path, case: Case) -> None:
    """A 2 MiB line after the first record: dead-lettered alone, with its exact size; its neighbours kept."""
    path = tmp_path / case.filename
    path.write_bytes(
        case.header + case.good(1, b"alpha") + b"\n" + b"y" * LONG + b"\n" + case.good(3, b"bravo") + b"\n"
    )
    lake, dead = tmp_path / "lake", tmp_path / "dead.jsonl"
    ingest(path, lake, dead, case)
    n = case.offset
    assert records(lake) == {case.source: [n + 1, n + 3]}
    (entry,) = dead_letters(dead)
    assert entry["record"] == n + 2
    assert len(orjson.dumps(entry)) < ENTRY_LIMIT
    assert reported_size(entry) == LONG, entry["reason"]
