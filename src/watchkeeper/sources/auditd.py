"""Linux audit logs (/var/log/audit/audit.log): `type=T msg=audit(EPOCH:SERIAL): key=value …` lines.

One row per record, tagged with its event's `serial`. SigmaHQ's auditd rules match one record
at a time by `type` (`type: EXECVE` with `a0`/`a1`, `type: PATH` with `name`, `type: SYSCALL` with
`exe`), and the records of one event reuse names (`a0` is a register in SYSCALL and the first
argument in EXECVE; every PATH has a `name`), so merging them into one row would lose fields or
make every rule wrong. Instead the records of an event are assembled (same serial, up to `EOE` or
until the event leaves a small window) and each of its rows gets the event's core fields:
`_time`, `_host`, `_user`, `_process` (exe), `_command_line` (the EXECVE arguments, or the
decoded proctitle), `_file_path`, `_action` (syscall name or record type), `_outcome`.

Values: quotes are removed; the fields auditd hex-encodes when they hold spaces or odd bytes
(`proctitle`, EXECVE `aN`, `name`, `cwd`, `exe`, `comm`, …) are decoded when unquoted and hex
(NUL separators become spaces). User-space records nest their fields in `msg='…'`; those are
read as fields too. The enriched format's uppercase names after `\\x1d` (`SYSCALL=execve`,
`AUID="alice"`) are kept as `syscall_name`, `auid_name`, … (column names are merged
case-insensitively, so `SYSCALL` cannot sit beside `syscall`); for raw logs `syscall_name` is
filled from the x86_64 syscall table for the syscalls the rules name.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, BinaryIO

import pyarrow as pa

from watchkeeper.events import col
from watchkeeper.sources.base import LogSourceMapping, Source
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.lines import RowBuffer, check_utf8, iter_lines

_RECORD_RE = re.compile(rb"(?:node=(\S+) )?type=(\S+) msg=audit\((\d+)(?:\.(\d+))?:(\d+)\): ?(.*)", re.DOTALL)
_KV = re.compile(r"([\w-]+(?:\[\d+\])?)=(\"[^\"]*\"|'[^']*'|\S*)")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_ENCODED = frozenset(
    {"proctitle", "name", "cwd", "exe", "comm", "path", "cmd", "data", "acct", "key", "ocomm"}
)
_ARG = re.compile(r"a(\d+)(?:\[(\d+)\])?")
_UNSET_IDS = {"4294967295", "-1", "unset"}
#: Open events kept while waiting for their `EOE`; records of one event are at most this far apart.
WINDOW = 32

#: x86_64 syscall numbers of the calls Sigma's auditd rules name (`SYSCALL: execve`).
X86_64_SYSCALLS = {
    "0": "read",
    "1": "write",
    "2": "open",
    "42": "connect",
    "43": "accept",
    "49": "bind",
    "50": "listen",
    "56": "clone",
    "57": "fork",
    "58": "vfork",
    "59": "execve",
    "62": "kill",
    "82": "rename",
    "83": "mkdir",
    "84": "rmdir",
    "85": "creat",
    "86": "link",
    "87": "unlink",
    "88": "symlink",
    "90": "chmod",
    "92": "chown",
    "99": "sysinfo",
    "101": "ptrace",
    "105": "setuid",
    "133": "mknod",
    "165": "mount",
    "175": "init_module",
    "176": "delete_module",
    "257": "openat",
    "259": "mknodat",
    "263": "unlinkat",
    "268": "fchmodat",
    "313": "finit_module",
    "319": "memfd_create",
    "322": "execveat",
}
_X86_64 = "c000003e"

_TIME, _HOST, _USER, _PROCESS, _CMD, _PATH, _ACTION, _OUTCOME, _SRC, _RECORD = (
    col(n)
    for n in (
        "time",
        "host",
        "user",
        "process",
        "command_line",
        "file_path",
        "action",
        "outcome",
        "src_ip",
        "record",
    )
)


class AuditdSource(Source):
    """Linux audit records, one row per record, grouped into events by `serial`."""

    name = "linux.auditd"
    logsources = (LogSourceMapping(product="linux", service="auditd", renames={"SYSCALL": "syscall_name"}),)

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """Lines of `type=… msg=audit(…):` records."""
        lines = [ln for ln in head.split(b"\n", 64)[:-1] if ln.strip()][:8] or [head]
        hits = sum(1 for ln in lines if _RECORD_RE.match(ln) is not None)
        return 0.95 * hits / len(lines) if hits * 2 >= len(lines) else 0.0

    def read(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        """Yield batches of audit records, each row carrying its event's core fields."""
        out = RowBuffer(self.name, origin, self.batch_size)
        events: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        for number, line in iter_lines(stream, origin, dead):
            if not line.strip() or line.startswith(b"----"):  # ausearch separators
                continue
            m = _RECORD_RE.match(line)
            if m is None:
                dead.add(origin, number, "not an audit record (type=… msg=audit(…):)", line)
                continue
            check_utf8(line, number, origin, dead)  # kept: say so if its bytes were replaced
            row = _record(m)
            row[_RECORD] = number
            serial = f"{row['node'] or ''}:{row['serial']}"
            records = events.get(serial)
            if records is None:
                records = events[serial] = []
            records.append(row)
            done: list[str] = []
            if row["type"] == "EOE":
                done.append(serial)
            while len(events) - len(done) > WINDOW:
                oldest = next(s for s in events if s not in done)
                done.append(oldest)
            for key in done:
                for batch in _emit(events.pop(key), out):
                    yield batch
        for records in events.values():
            yield from _emit(records, out)
        batch = out.flush()
        if batch is not None:
            yield batch


def _emit(records: list[dict[str, Any]], out: RowBuffer) -> Iterator[pa.RecordBatch]:
    core = _event_core(records)
    for row in records:
        if row["type"] == "EOE":
            continue  # the end-of-event marker carries nothing
        row.update(core)
        batch = out.add(row)
        if batch is not None:
            yield batch


def _record(m: re.Match[bytes]) -> dict[str, Any]:
    node, kind, seconds, millis, serial, body = m.groups()
    text = body.decode("utf-8", "replace")
    enriched = ""
    if "\x1d" in text:
        text, _, enriched = text.partition("\x1d")
    ms = int((millis or b"0").ljust(3, b"0")[:3])
    row: dict[str, Any] = {
        "type": kind.decode("utf-8", "replace"),
        "node": node.decode("utf-8", "replace") if node else None,
        "serial": serial.decode(),
        _TIME: int(seconds) * 1_000_000 + ms * 1000,
    }
    is_execve = row["type"] == "EXECVE"
    for key, raw in _KV.findall(text):
        if key == "msg" and raw.startswith("'"):
            # user-space records: the interesting fields are inside msg='…'
            for inner, value in _KV.findall(raw[1:-1]):
                row.setdefault(inner, _value(inner, value, False))
            continue
        if is_execve:
            arg = _ARG.fullmatch(key)
            if arg is not None and arg.group(2) is not None:  # long argument split as a2[0], a2[1] …
                name = f"a{arg.group(1)}"
                row[name] = (row.get(name) or "") + (_value(key, raw, True) or "")
                continue
            if key.endswith("_len"):
                continue
            row[key] = _value(key, raw, arg is not None)
        else:
            row[key] = _value(key, raw, False)
    for key, raw in _KV.findall(enriched):
        row[f"{key.lower()}_name"] = raw.strip("\"'")
    if "syscall" in row and "syscall_name" not in row and row.get("arch") == _X86_64:
        known = X86_64_SYSCALLS.get(row["syscall"])
        if known is not None:
            row["syscall_name"] = known
    return row


def _value(key: str, raw: str, encoded_arg: bool) -> str | None:
    if raw[:1] in ('"', "'"):
        return raw[1:-1]
    if raw == "(null)" or raw == "?":
        return None
    if (encoded_arg or key in _ENCODED) and _HEX.fullmatch(raw):
        decoded = bytes.fromhex(raw).decode("utf-8", "replace")
        return decoded.replace("\x00", " ").strip() if key in ("proctitle", "cmd") or encoded_arg else decoded
    return raw


def _event_core(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Core fields of one event, from its records (SYSCALL first, then EXECVE, PATH, user records)."""
    core: dict[str, Any] = {}
    by_type: dict[str, dict[str, Any]] = {}
    for r in records:
        by_type.setdefault(r["type"], r)
    main = by_type.get("SYSCALL") or records[0]
    core[_TIME] = main[_TIME]
    if main.get("node"):
        core[_HOST] = main["node"]
    elif main.get("hostname") not in (None, "?"):
        core[_HOST] = main.get("hostname")
    user = main.get("auid_name") or main.get("acct") or main.get("auid")
    if user in _UNSET_IDS:
        user = main.get("uid_name") or main.get("uid")
    if user is not None:
        core[_USER] = user
    if main.get("exe"):
        core[_PROCESS] = main["exe"]
    execve = by_type.get("EXECVE")
    if execve is not None:
        argc = execve.get("argc")
        count = int(argc) if argc and argc.isdigit() else 0
        args = [execve.get(f"a{i}") or "" for i in range(count)]
        core[_CMD] = " ".join(args)
    elif by_type.get("PROCTITLE", {}).get("proctitle"):
        core[_CMD] = by_type["PROCTITLE"]["proctitle"]
    for r in records:
        if r["type"] == "PATH" and r.get("name") and r.get("nametype") not in ("PARENT",):
            core[_PATH] = r["name"]
            break
    core[_ACTION] = main.get("syscall_name") or main.get("op") or main["type"].lower()
    result = main.get("success") or main.get("res")
    if result is not None:
        core[_OUTCOME] = "success" if result in ("yes", "success", "1") else "failure"
    addr = main.get("addr")
    if addr and addr not in ("?", "UNKNOWN"):
        core[_SRC] = addr
    return core
