"""Syslog and auth.log parsing over the shared data sets, plus bad input and arbitrary bytes."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.syslog import AuthLogSource, SyslogSource


def read(source: SyslogSource, data: bytes, origin: str = "mem") -> tuple[pa.Table, DeadLetter]:
    dead = DeadLetter()
    batches = list(source.read(io.BytesIO(data), origin, dead))
    for b in batches:
        assert b.num_rows <= source.batch_size
        assert len(set(b.column("_source").to_pylist())) == 1
    return concat(batches), dead


def concat(batches: list[pa.RecordBatch]) -> pa.Table:
    """Batches of differing columns as one table (absent columns null)."""
    if not batches:
        return pa.table({"_record": pa.array([], pa.int64())})
    return pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="default")


def test_auth_log_counts_and_brute_force(datasets: Path) -> None:
    path = datasets / "elastic-examples/auth/auth.log"
    data = path.read_bytes()
    table, dead = read(AuthLogSource(year=2024), data, str(path))
    assert table.num_rows == data.count(b"\n") == 7121
    assert dead.count == 0
    assert set(table.column("_source").to_pylist()) == {"linux.auth"}
    rows = table.select(["_action", "_outcome", "_src_ip"]).to_pylist()
    failures = Counter(r["_src_ip"] for r in rows if r["_action"] == "logon" and r["_outcome"] == "failure")
    ((top_ip, top_count),) = failures.most_common(1)
    assert (top_ip, top_count) == ("24.151.103.17", 157)
    successes = [r for r in rows if r["_action"] == "logon" and r["_outcome"] == "success"]
    assert len(successes) == data.count(b"]: Accepted ")
    assert table.column("_time")[0].as_py() == datetime(2024, 3, 27, 13, 6, 56, tzinfo=UTC)


def test_sudo_fields(datasets: Path) -> None:
    data = (datasets / "elastic-examples/auth/auth.log").read_bytes()
    table, _ = read(AuthLogSource(year=2024), data)
    sudo = table.filter(pa.compute.equal(table.column("program"), "sudo"))
    with_cmd = [
        r for r in sudo.select(["COMMAND", "_command_line", "USER", "_user"]).to_pylist() if r["COMMAND"]
    ]
    assert len(with_cmd) == data.count(b"; COMMAND=")
    assert all(r["_command_line"] == r["COMMAND"] and r["USER"] and r["_user"] for r in with_cmd)


def test_loghub_linux_and_openssh(datasets: Path) -> None:
    for name in ("Linux/Linux_2k.log", "OpenSSH/OpenSSH_2k.log"):
        data = (datasets / "loghub" / name).read_bytes()
        table, dead = read(SyslogSource(year=2024), data, name)
        assert dead.count == 0
        assert table.num_rows == len(data.splitlines()) == 2000
    linux = (datasets / "loghub/Linux/Linux_2k.log").read_bytes()
    table, _ = read(SyslogSource(year=2024), linux)
    kinds = Counter(table.column("_source").to_pylist())
    programs = Counter(
        ln.split(b" ")[4].split(b"[")[0].split(b"(")[0].rstrip(b":") for ln in linux.splitlines()
    )
    assert kinds["linux.auth"] >= programs[b"sshd"] + programs[b"su"] > 0
    assert kinds["linux.syslog"] > 0


def test_sniff_prefers_auth_for_auth_log(datasets: Path) -> None:
    head = (datasets / "elastic-examples/auth/auth.log").read_bytes()[:65536]
    assert AuthLogSource.sniff(head, "var/log/auth.log") > SyslogSource.sniff(head, "var/log/auth.log") > 0.5
    assert AuthLogSource.sniff(head, "syslog") == 0.0
    for other in ("elastic-examples/apache/apache_logs", "loghub/Apache/Apache_2k.log"):
        assert SyslogSource.sniff((datasets / other).read_bytes()[:65536], other) == 0.0


def test_rfc5424_and_priority() -> None:
    data = (
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - BOM'su root' failed\n"
        b"<86>Oct 11 22:14:15 host sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/id\n"
        b'<13>1 2024-01-02T03:04:05+01:00 h app 12 - [ex@1 a="b"] hello\n'
    )
    table, dead = read(SyslogSource(year=2024), data)
    assert dead.count == 0
    rows = {r["_record"]: r for r in table.to_pylist()}
    assert rows[1]["facility"] == "auth" and rows[1]["severity"] == "crit" and rows[1]["msgid"] == "ID47"
    assert rows[1]["_time"] == datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC)
    assert (
        rows[2]["facility"] == "authpriv"
        and rows[2]["_command_line"] == "/bin/id"
        and rows[2]["_user"] == "alice"
    )
    assert rows[3]["structured_data"] == '[ex@1 a="b"]' and rows[3]["message"] == "hello"
    assert rows[3]["_time"] == datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert {rows[1]["_source"], rows[2]["_source"], rows[3]["_source"]} == {"linux.auth", "linux.syslog"}


def test_year_inference() -> None:
    data = b"Dec 31 23:59:59 h cron[1]: a\nJan  1 00:00:01 h cron[1]: b\n"
    table, _ = read(SyslogSource(now=datetime(2025, 3, 1, tzinfo=UTC)), data)
    times = table.column("_time").to_pylist()
    assert [t.year for t in times] == [2024, 2025]
    table, _ = read(SyslogSource(now=datetime(2025, 12, 31, 12, tzinfo=UTC)), data)
    assert [t.year for t in table.column("_time").to_pylist()] == [2025, 2026]


def test_bad_input_is_dead_lettered_and_rest_read() -> None:
    good = b"Mar 27 13:06:56 host sshd[1]: Failed password for root from 10.0.0.1 port 22 ssh2\n"
    data = good + b"Mar 27 13:06:57 host app[2]: caf\xe9\n" + b"x" * (10 << 20) + b"\n" + b"garbage\n" + good
    table, dead = read(SyslogSource(year=2024), data)
    assert table.num_rows == 3
    assert dead.count == 2 and dead.by_file["mem"] == 2
    messages = table.column("message").to_pylist()
    assert "caf\ufffd" in messages  # latin-1 byte kept as a replacement character
    assert dead.repaired == 1 and dead.repaired_by_file["mem"] == 1  # and reported
    assert sorted(table.column("_record").to_pylist()) == [1, 2, 5]


def test_an_unparsable_line_not_utf8_is_reported_once() -> None:
    said: list[str] = []
    dead = DeadLetter(announce=said.append)
    good = b"Mar 27 13:06:56 host sshd[1]: Failed password for root from 10.0.0.1 port 22 ssh2\n"
    batches = list(SyslogSource(year=2024).read(io.BytesIO(good + b"gar\xffbage\n" + good), "auth.log", dead))
    assert concat(batches).num_rows == 2
    assert dead.count == 1 and dead.repaired == 0
    assert said == ["auth.log, record 2: not a syslog line (no timestamp and host)"]


def test_lines_not_utf8_are_kept_and_reported_by_number() -> None:
    said: list[str] = []
    dead = DeadLetter(announce=said.append)
    good = b"Mar 27 13:06:56 host sshd[1]: Failed password for root from 10.0.0.1 port 22 ssh2\n"
    data = good + b"Mar 27 13:06:57 host sshd[2]: Failed password for j\xf6rg from 10.0.0.2 port 22 ssh2\n" + good
    batches = list(SyslogSource(year=2024).read(io.BytesIO(data * 2), "auth.log", dead))
    table = concat(batches)
    assert table.num_rows == 6 and dead.count == 0
    assert table.column("_user").to_pylist().count("j\ufffdrg") == 2
    assert dead.repaired == 2
    assert [line.split(":")[0] for line in said] == ["auth.log, record 2", "auth.log, record 5"]
    assert all("not valid UTF-8" in line for line in said)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_arbitrary_lines_never_raise(lines: list[bytes]) -> None:
    data = b"\n".join(lines)
    table, dead = read(SyslogSource(year=2024, batch_size=3), data)
    nonblank = sum(1 for ln in data.split(b"\n") if ln.rstrip(b"\r"))
    assert table.num_rows + dead.count == nonblank


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=120))
def test_arbitrary_messages_parse(message: str) -> None:
    line = ("Mar 27 13:06:56 host sshd[9]: " + message.replace("\n", " ").replace("\r", " ")).encode()
    table, dead = read(AuthLogSource(year=2024), line)
    assert dead.count == 0 and table.num_rows == 1
