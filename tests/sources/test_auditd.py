"""auditd records over the OTRF Linux atomics, event assembly, hex decoding, arbitrary input."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from watchkeeper.sources.auditd import AuditdSource
from watchkeeper.sources.deadletter import DeadLetter


def read(data: bytes, batch_size: int = 8192) -> tuple[list[dict[str, object]], DeadLetter]:
    dead = DeadLetter()
    batches = list(AuditdSource(batch_size=batch_size).read(io.BytesIO(data), "audit.log", dead))
    assert all(b.num_rows <= batch_size for b in batches)
    rows = [r for b in batches for r in b.to_pylist()]
    return rows, dead


def members(datasets: Path) -> list[tuple[str, bytes]]:
    zips = sorted((datasets / "security-datasets/datasets/atomic/linux").rglob("*.zip"))
    assert zips
    out = []
    for path in zips:
        with zipfile.ZipFile(path) as z:
            out += [(n, z.read(n)) for n in z.namelist()]
    return out


def test_otrf_linux_atomics(datasets: Path) -> None:
    # manifest.csv lists no atomic/linux members, so the file itself is the oracle: one row per
    # audit record, one event per serial.
    for name, data in members(datasets):
        assert AuditdSource.sniff(data[:65536], name) > 0.9
        rows, dead = read(data)
        lines = [ln for ln in data.splitlines() if ln.strip()]
        assert dead.count == 0
        assert len(rows) == len(lines)
        serials = {m.group(1) for m in re.finditer(rb"msg=audit\([\d.]+:(\d+)\)", data)}
        assert {r["serial"] for r in rows} == {s.decode() for s in serials}
        for serial in serials:
            event = [r for r in rows if r["serial"] == serial.decode()]
            title = next(r["proctitle"] for r in event if r["type"] == "PROCTITLE")
            execve = next(r for r in event if r["type"] == "EXECVE")
            assert execve["_command_line"] == title  # EXECVE args and hex proctitle agree
            assert len({r["_command_line"] for r in event}) == 1
            assert next(r for r in event if r["type"] == "SYSCALL")["syscall_name"] == "execve"
            assert {r["_process"] for r in event} == {next(r["exe"] for r in event if r["type"] == "SYSCALL")}


def test_interleaved_records_hex_and_user_messages() -> None:
    data = (
        b'type=SYSCALL msg=audit(1.5:10): arch=c000003e syscall=59 success=no a0=1 comm="x" exe="/tmp/x" auid=1000 uid=0 key=(null)\n'
        b'type=USER_LOGIN msg=audit(2.0:11): pid=1 uid=0 auid=4294967295 msg=\'op=login acct="bob" exe="/usr/sbin/sshd" addr=10.1.2.3 res=failed\'\n'
        b'type=EXECVE msg=audit(1.5:10): argc=3 a0="ls" a1=2D6C2061 a2_len=4 a2[0]="ab" a2[1]="cd"\n'
        b"type=PATH msg=audit(1.5:10): item=0 name=2F746D702F6120620A nametype=NORMAL\n"
        b"type=EOE msg=audit(1.5:10): \n"
        b'type=SYSCALL msg=audit(3:12): arch=c000003e syscall=99 success=yes\x1dARCH=x86_64 SYSCALL=sysinfo AUID="alice"\n'
    )
    rows, dead = read(data)
    assert dead.count == 0 and len(rows) == 5
    by_type = {r["type"]: r for r in rows if r["serial"] != "12"}
    assert by_type["EXECVE"]["a1"] == "-l a" and by_type["EXECVE"]["a2"] == "abcd"
    assert by_type["EXECVE"]["_command_line"] == "ls -l a abcd"
    assert by_type["PATH"]["name"] == "/tmp/a b\n" and by_type["PATH"]["_file_path"] == "/tmp/a b\n"
    assert by_type["SYSCALL"]["_outcome"] == "failure" and by_type["SYSCALL"]["_process"] == "/tmp/x"
    assert by_type["SYSCALL"]["a0"] == "1"  # a register, not decoded
    login = by_type["USER_LOGIN"]
    assert login["_user"] == "bob" and login["_src_ip"] == "10.1.2.3" and login["_outcome"] == "failure"
    enriched = next(r for r in rows if r["serial"] == "12")
    assert enriched["syscall_name"] == "sysinfo" and enriched["_user"] == "alice"


def test_bad_lines_dead_lettered() -> None:
    good = b'type=EXECVE msg=audit(1.0:1): argc=1 a0="id"\n'
    rows, dead = read(
        good
        + b"junk\n"
        + b"type=X "
        + b"a" * (10 << 20)
        + b"\n"
        + b'type=CWD msg=audit(1.0:1): cwd="/r\xe9"\n'
    )
    assert len(rows) == 2 and dead.count == 2
    assert [r["_record"] for r in rows] == [1, 4]
    assert rows[1]["cwd"] == "/r\ufffd"
    assert dead.repaired == 1 and dead.repaired_by_file["audit.log"] == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=15))
def test_arbitrary_lines_never_raise(lines: list[bytes]) -> None:
    data = b"\n".join(
        b"type=SYSCALL msg=audit(1.0:%d): " % i + ln if i % 2 else ln for i, ln in enumerate(lines)
    )
    rows, dead = read(data, batch_size=2)
    # Every line is a row or a dead letter, except ausearch's `----` event separators.
    data_lines = [ln for ln in data.split(b"\n") if ln.strip() and not ln.startswith(b"----")]
    assert len(rows) + dead.count == len(data_lines)


_PRINTABLE = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters='"'), max_size=20)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), _PRINTABLE, max_size=6))
def test_quoted_values_round_trip(fields: dict[str, str]) -> None:
    clean = {k: v for k, v in fields.items() if k not in ("type", "serial", "node", "msg")}
    body = " ".join(f'{k}="{v}"' for k, v in clean.items())
    rows, dead = read(f"type=CWD msg=audit(1.0:7): {body}".encode())
    assert dead.count == 0
    for k, v in clean.items():
        assert rows[0].get(k) == (v or None)
