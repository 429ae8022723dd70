"""Syslog files: RFC 3164, RFC 5424 and the priority-less form of /var/log/auth.log and /var/log/syslog.

Every line becomes one event with its native parts (`hostname`, `program`, `pid`, `message`,
`facility`, `severity`, and for RFC 5424 `msgid`, `structured_data`) and, for the programs that
matter to an investigation (sshd, sudo, su, useradd, passwd, cron, logind, login), the core
fields `_user`, `_src_ip`, `_action`, `_outcome`, `_command_line` (see `syslog_programs`).

Lines of authentication programs (or of facility auth/authpriv) are `linux.auth` events, the
others `linux.syslog`; each batch holds one of the two, so a mixed /var/log/messages splits.

The year: RFC 3164 timestamps have none. A reader takes an explicit `year` for the first line;
without one it assumes the year of `now` (the time of reading) and steps back one year when that
would put the first line more than a day in the future (a December file read in January). After
that the year only moves forward, by one each time the month goes backwards (Dec -> Jan), so a
file spanning New Year stays in order. Timestamps without an offset are taken as UTC.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

import pyarrow as pa

from watchkeeper.events import col
from watchkeeper.sources.base import DEFAULT_BATCH_SIZE, LogSourceMapping, Source
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.lines import RowBuffer, iter_lines, parse_time

MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
FACILITIES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
)
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
_AUTH_FACILITIES = {4, 10}
_ACTION = col("action")
_COMMAND_LINE = col("command_line")
_HOST = col("host")
_OUTCOME = col("outcome")
_PROCESS = col("process")
_RECORD = col("record")
_SRC_IP = col("src_ip")
_TIME = col("time")
_USER = col("user")

# RFC 3164 and the file forms: optional <PRI>, "Mmm dd hh:mm:ss" or an ISO timestamp (rsyslog's
# high-precision format), hostname, then an optional "tag[pid]:" (tags like `sshd(pam_unix)`
# or `postfix/smtpd` included).
_BSD = re.compile(
    r"(?:<(\d{1,3})>)?"
    r"(?:((?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d) (\d\d):(\d\d):(\d\d)(?:\.\d+)?"
    r"|(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)) "
    r"(\S+) ?(?:([^\s\[\]:]+)(?:\[(\d+)\])?: ?)?(.*)",
    re.DOTALL,
)
# RFC 5424: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]
_IETF = re.compile(
    r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (.*))?",
    re.DOTALL,
)


def _is_auth_file(filename: str) -> bool:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].rsplit("!", 1)[-1].lower()
    return base.startswith(("auth.log", "secure", "authlog"))


def _looks_like_syslog(head: bytes) -> float:
    """Share of the first complete lines of `head` that parse as syslog with a program tag."""
    lines = [ln for ln in head.split(b"\n")[:-1] if ln.strip()][:8] or [head]
    hits = 0
    for raw in lines:
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        m = _BSD.match(line)
        if (m is not None and m.group(8) is not None) or _IETF.match(line) is not None:
            hits += 1
    return hits / len(lines)


class SyslogSource(Source):
    """System logs in syslog form (`linux.syslog`); authentication lines come out as `linux.auth`."""

    name = "linux.syslog"
    logsources = (
        LogSourceMapping(product="linux", service="syslog"),
        LogSourceMapping(product="linux", service="cron", conditions={"program": ("cron", "crond", "CRON")}),
        LogSourceMapping(
            product="linux",
            service="clamav",
            conditions={"program": ("clamd", "freshclam", "clamav", "clamscan")},
        ),
        LogSourceMapping(product="linux", service="vsftpd", conditions={"program": ("vsftpd",)}),
        LogSourceMapping(
            product="linux", service="guacamole", conditions={"program": ("guacd", "guacamole")}
        ),
    )
    #: Route every line to `linux.auth` (the file is known to be an authentication log).
    all_auth = False

    def __init__(
        self, batch_size: int = DEFAULT_BATCH_SIZE, year: int | None = None, now: datetime | None = None
    ) -> None:
        super().__init__(batch_size)
        self.year = year
        self.now = now

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """Syslog lines with a program tag; more sure when the file is named syslog/messages."""
        share = _looks_like_syslog(head)
        if share < 0.5:
            return 0.0
        base = filename.replace("\\", "/").rsplit("/", 1)[-1].lower()
        named = base.startswith(("syslog", "messages", "kern.log", "daemon.log", "cron", "user.log"))
        return 0.6 + 0.2 * share + (0.1 if named else 0.0)

    def read(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        """Yield `linux.auth` and `linux.syslog` batches of the lines of a syslog file."""
        auth = RowBuffer("linux.auth", origin, self.batch_size)
        other = RowBuffer("linux.syslog", origin, self.batch_size)
        clock = _YearClock(self.year, self.now)
        for number, line in iter_lines(stream, origin, dead):
            if not line:
                continue
            row = parse_line(line.decode("utf-8", "replace"), clock)
            if row is None:
                dead.add(origin, number, "not a syslog line (no timestamp and host)", line)
                continue
            row[_RECORD] = number
            flagged = row.pop("__auth")
            is_auth = self.all_auth or flagged
            batch = (auth if is_auth else other).add(row)
            if batch is not None:
                yield batch
        for buffer in (auth, other):
            batch = buffer.flush()
            if batch is not None:
                yield batch


class AuthLogSource(SyslogSource):
    """An authentication log (/var/log/auth.log, /var/log/secure): every line is `linux.auth`."""

    name = "linux.auth"
    logsources = (
        LogSourceMapping(product="linux", service="auth"),
        LogSourceMapping(product="linux", service="syslog"),
        LogSourceMapping(product="linux", service="sshd", conditions={"program": ("sshd",)}),
        LogSourceMapping(product="linux", service="sudo", conditions={"program": ("sudo",)}),
        LogSourceMapping(product="linux", service="cron", conditions={"program": ("cron", "crond", "CRON")}),
    )
    all_auth = True

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """Syslog lines in a file named like an authentication log (auth.log, secure)."""
        if not _is_auth_file(filename):
            return 0.0
        share = _looks_like_syslog(head)
        return 0.0 if share < 0.5 else 0.85 + 0.1 * share


class _YearClock:
    """Turns RFC 3164 month/day/time into µs since the epoch, inferring the year (module docstring)."""

    def __init__(self, year: int | None, now: datetime | None) -> None:
        self.year = year
        self.now = now
        self.last_month = 0
        self.days: dict[str, int | None] = {}

    def micros(self, monthday: str, hh: str, mm: str, ss: str) -> int | None:
        """µs since the epoch of `Mmm dd` and a time of day."""
        base = self.days.get(monthday, -1)
        if base == -1:
            base = self.days[monthday] = self._midnight(MONTHS[monthday[:3]], int(monthday[4:]))
        if base is None:
            return None
        return (base + int(hh) * 3600 + int(mm) * 60 + int(ss)) * 1_000_000

    def _midnight(self, month: int, day: int) -> int | None:
        if self.year is None:
            now = self.now or datetime.now(UTC)
            self.year = now.year
            try:
                if (datetime(now.year, month, day, tzinfo=UTC) - now).total_seconds() > 86400:
                    self.year -= 1
            except ValueError:
                pass
        elif month < self.last_month:
            self.year += 1
            self.days.clear()  # cached days belong to the previous year
        self.last_month = month
        try:
            datetime(self.year, month, day)  # timegm would accept Feb 31
        except ValueError:
            return None
        return calendar.timegm((self.year, month, day, 0, 0, 0, 0, 0, 0))


def parse_line(line: str, clock: _YearClock) -> dict[str, Any] | None:
    """One syslog line as a row (with a private `__auth` routing flag), or None if it is not syslog."""
    if line.startswith("<") and ">1 " in line[:6]:
        m = _IETF.match(line)
        if m is not None:
            return _ietf(m)
    m = _BSD.match(line)
    if m is None:
        return None
    pri, monthday, hh, mm, ss, iso, host, program, pid, text = m.groups()
    row: dict[str, Any] = {
        _TIME: clock.micros(monthday, hh, mm, ss) if monthday is not None else parse_time(iso),
        "hostname": host,
        _HOST: host,
        "message": text,
    }
    return _finish(row, program, pid, text, pri)


def _ietf(m: re.Match[str]) -> dict[str, Any]:
    pri, stamp, host, app, procid, msgid, sd, message = m.groups()
    hostname = None if host == "-" else host
    text = message or ""
    if text.startswith("\ufeff"):  # RFC 5424 marks UTF-8 messages with a BOM
        text = text[1:]
    row: dict[str, Any] = {_TIME: parse_time(stamp), "hostname": hostname, _HOST: hostname, "message": text}
    if msgid != "-":
        row["msgid"] = msgid
    if sd != "-":
        row["structured_data"] = sd
    return _finish(row, None if app == "-" else app, None if procid == "-" else procid, text, pri)


def _finish(
    row: dict[str, Any], program: str | None, pid: str | None, text: str, pri: str | None
) -> dict[str, Any]:
    auth = False
    if pri is not None:
        value = int(pri)
        facility = value >> 3
        row["facility"] = FACILITIES[facility] if facility < len(FACILITIES) else str(facility)
        row["severity"] = SEVERITIES[value & 7]
        auth = facility in _AUTH_FACILITIES
    if pid is not None:
        row["pid"] = pid
    if program is not None:
        row["program"] = program
        row[_PROCESS] = program
        base = _BASES.get(program)
        if base is None:
            base = program.split("(", 1)[0].lower()
            if len(_BASES) < 4096:
                _BASES[program] = base
        auth = auth or base in AUTH_PROGRAMS or text.startswith("pam_")
        parse_program(base, text, row)
    row["__auth"] = auth
    return row


_BASES: dict[str, str] = {}  # program tag -> lower-case name without `(pam_unix)`; few distinct tags


# --- the programs whose messages carry who, from where, did what ------------------------------

AUTH_PROGRAMS = frozenset(
    {
        "sshd",
        "sshd-session",
        "sudo",
        "su",
        "login",
        "useradd",
        "userdel",
        "usermod",
        "passwd",
        "chpasswd",
        "groupadd",
        "groupdel",
        "groupmod",
        "gpasswd",
        "chage",
        "chsh",
        "chfn",
        "newgrp",
        "systemd-logind",
        "cron",
        "crond",
        "pkexec",
        "polkitd",
        "unix_chkpwd",
        "sshd-auth",
    }
)

_SSH_ACCEPTED = re.compile(r"(Accepted|Failed) (\S+) for (invalid user )?(.*?) from (\S+) port (\d+)")
_SSH_INVALID = re.compile(r"[Ii]nvalid user (.*?) from (\S+)(?: port (\d+))?")
_SSH_DISCONNECT = re.compile(
    r"(?:Received disconnect from|Disconnected from|Connection closed by|Connection reset by)"
    r" (?:(?:authenticating |invalid )?user (\S*) )?(\S+) port (\d+)"
)
_SSH_MAXTRIES = re.compile(
    r"maximum authentication attempts exceeded for (invalid user )?(.*?) from (\S+) port (\d+)"
)
_REPEATED = re.compile(r"message repeated (\d+) times: \[ ?(.*?)\]?$")
_PAM = re.compile(r"pam_unix\(([^:)]+):([^)]+)\): (.*)")
_PAM_SESSION = re.compile(
    r"session (opened|closed) for user (\S+?)(?:\(uid=\d+\))?(?: by (\S*?)(?:\(uid=\d+\))?)?$"
)
_PAM_FIELDS = re.compile(r"(\w+)=(\S*)")
_NEW_USER = re.compile(r"new (user|group): (.*)")
_KV_COMMA = re.compile(r"(\w+)=([^,]*)")
_SU = re.compile(r"(Successful|FAILED) su for (\S+) by (\S+)")
_SU_SHORT = re.compile(r"([+-]) (\S+) (\S+?):(\S+)$")
_LOGIND = re.compile(r"(New|Removed) session (\S+?)(?: of user (\S+?))?\.$")
_CRON_CMD = re.compile(r"\((\S+)\) CMD \((.*)\)$")
_LOGIN_FAIL = re.compile(r"FAILED LOGIN \(\d+\) on '([^']*)' FOR '([^']*)'")
_LOGIN_ROOT = re.compile(r"ROOT LOGIN +on '([^']*)'")
_PASSWD = re.compile(r"password changed for (\S+)")
_USERMOD = re.compile(r"(?:add|delete) '([^']+)' (?:to|from) (?:shadow )?group '([^']+)'")


def parse_program(program: str, text: str, row: dict[str, Any]) -> None:
    """Fill core and named fields of `row` from the message of a known program."""
    handler = _HANDLERS.get(program)
    if text.startswith("pam_unix("):
        _pam(text, row)
    elif row.get("program", "").endswith("(pam_unix)"):  # old form: `sshd(pam_unix)[123]: ...`
        row["pam_service"] = program
        _pam_message(text, row)
    elif handler is not None:
        handler(text, row)


def _sshd(text: str, row: dict[str, Any]) -> None:
    repeated = _REPEATED.match(text)
    if repeated is not None:
        # syslog folds identical lines; the count is kept, the event stays one row
        row["repeated"] = repeated.group(1)
        text = repeated.group(2)
    m = _SSH_ACCEPTED.match(text)
    if m is not None:
        verdict, method, invalid, user, ip, port = m.groups()
        row[_ACTION] = "logon"
        row[_OUTCOME] = "success" if verdict == "Accepted" else "failure"
        row["auth_method"] = method
        _peer(row, user, ip, port)
        if invalid:
            row["invalid_user"] = "true"
        return
    m = _SSH_INVALID.match(text)
    if m is not None:
        row[_ACTION] = "invalid_user"
        row[_OUTCOME] = "failure"
        _peer(row, m.group(1), m.group(2), m.group(3))
        return
    m = _SSH_DISCONNECT.match(text)
    if m is not None:
        row[_ACTION] = "disconnect"
        _peer(row, m.group(1), m.group(2), m.group(3))
        return
    m = _SSH_MAXTRIES.search(text)
    if m is not None:
        row[_ACTION] = "max_auth_attempts"
        row[_OUTCOME] = "failure"
        _peer(row, m.group(2), m.group(3), m.group(4))


def _peer(row: dict[str, Any], user: str | None, ip: str, port: str | None) -> None:
    if user:
        row[_USER] = user
    row[_SRC_IP] = ip
    if port:
        row["src_port"] = port


def _pam(text: str, row: dict[str, Any]) -> None:
    m = _PAM.match(text)
    if m is None:
        return
    service, kind, rest = m.groups()
    row["pam_service"] = service
    row["pam_type"] = kind
    _pam_message(rest, row)


def _pam_message(rest: str, row: dict[str, Any]) -> None:
    s = _PAM_SESSION.match(rest)
    if s is not None:
        row[_ACTION] = "session_open" if s.group(1) == "opened" else "session_close"
        row[_OUTCOME] = "success"
        row[_USER] = s.group(2)
        if s.group(3):
            row["by_user"] = s.group(3)
        return
    if rest.startswith("authentication failure"):
        row[_ACTION] = "authenticate"
        row[_OUTCOME] = "failure"
        fields = dict(_PAM_FIELDS.findall(rest))
        if fields.get("rhost"):
            row[_SRC_IP] = fields["rhost"]
        if fields.get("user"):
            row[_USER] = fields["user"]
        return
    p = _PASSWD.match(rest)
    if p is not None:
        row[_ACTION] = "password_change"
        row[_OUTCOME] = "success"
        row[_USER] = p.group(1)


def _sudo(text: str, row: dict[str, Any]) -> None:
    user, sep, rest = text.partition(" : ")
    if not sep:
        return
    row[_USER] = user.strip()
    row[_ACTION] = "sudo"
    notes = []
    for part in rest.split(" ; "):
        key, eq, value = part.partition("=")
        if eq and key.isupper() and key.isalpha():
            row[key] = value  # TTY, PWD, USER, COMMAND: the names Sigma's sudo rules use
        else:
            notes.append(part.strip())
    if notes:
        row["sudo_error"] = "; ".join(notes)
    row[_OUTCOME] = "failure" if notes else "success"
    if "COMMAND" in row:
        row[_COMMAND_LINE] = row["COMMAND"]


def _su(text: str, row: dict[str, Any]) -> None:
    m = _SU.match(text)
    if m is not None:
        row[_ACTION] = "su"
        row[_OUTCOME] = "success" if m.group(1) == "Successful" else "failure"
        row["target_user"] = m.group(2)
        row[_USER] = m.group(3)
        return
    m = _SU_SHORT.match(text)
    if m is not None:
        row[_ACTION] = "su"
        row[_OUTCOME] = "success" if m.group(1) == "+" else "failure"
        row["tty"] = m.group(2)
        row[_USER] = m.group(3)
        row["target_user"] = m.group(4)


def _account(text: str, row: dict[str, Any]) -> None:
    m = _NEW_USER.match(text)
    if m is not None:
        row[_ACTION] = "user_create" if m.group(1) == "user" else "group_create"
        row[_OUTCOME] = "success"
        for key, value in _KV_COMMA.findall(m.group(2)):
            row[key] = value.strip()  # name, UID, GID, home, shell
        if row.get("name"):
            row[_USER] = row["name"]
        return
    m = _USERMOD.match(text)
    if m is not None:
        row[_ACTION] = "group_member_add" if text.startswith("add") else "group_member_remove"
        row[_OUTCOME] = "success"
        row[_USER] = m.group(1)
        row["group"] = m.group(2)


def _logind(text: str, row: dict[str, Any]) -> None:
    m = _LOGIND.match(text)
    if m is not None:
        row[_ACTION] = "session_open" if m.group(1) == "New" else "session_close"
        row["session"] = m.group(2)
        if m.group(3):
            row[_USER] = m.group(3)


def _cron(text: str, row: dict[str, Any]) -> None:
    m = _CRON_CMD.match(text)
    if m is not None:
        row[_ACTION] = "execute"
        row[_USER] = m.group(1)
        row[_COMMAND_LINE] = m.group(2)


def _login(text: str, row: dict[str, Any]) -> None:
    m = _LOGIN_FAIL.match(text)
    if m is not None:
        row[_ACTION] = "logon"
        row[_OUTCOME] = "failure"
        row["tty"] = m.group(1)
        row[_USER] = m.group(2)
        return
    m = _LOGIN_ROOT.match(text)
    if m is not None:
        row[_ACTION] = "logon"
        row[_OUTCOME] = "success"
        row["tty"] = m.group(1)
        row[_USER] = "root"


_HANDLERS = {
    "sshd": _sshd,
    "sshd-session": _sshd,
    "sudo": _sudo,
    "su": _su,
    "useradd": _account,
    "groupadd": _account,
    "usermod": _account,
    "gpasswd": _account,
    "systemd-logind": _logind,
    "cron": _cron,
    "crond": _cron,
    "login": _login,
}
