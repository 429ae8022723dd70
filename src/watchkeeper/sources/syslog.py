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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from watchkeeper.events import col, repeated, text_columns
from watchkeeper.sources.assign import Assignments
from watchkeeper.sources.base import DEFAULT_BATCH_SIZE, LogSourceMapping, Source
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.lines import check_utf8, iso_times, iter_line_blocks, split_block
from watchkeeper.sources.syslog_programs import AUTH_PROGRAMS, parse_programs

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
_HOST = col("host")
_PROCESS = col("process")
_RECORD = col("record")
_TIME = col("time")

# RFC 3164 and the file forms: optional <PRI>, "Mmm dd hh:mm:ss" or an ISO timestamp (rsyslog's
# high-precision format), hostname, then an optional "tag[pid]:" (tags like `sshd(pam_unix)`
# or `postfix/smtpd` included). One text serves Python (sniffing) and RE2 (parsing blocks).
BSD_PATTERN = (
    r"^(?:<(?P<pri>\d{1,3})>)?"
    r"(?:(?P<monthday>(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d)"
    r" (?P<hh>\d\d):(?P<mm>\d\d):(?P<ss>\d\d)(?:\.\d+)?"
    r"|(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)) "
    r"(?P<host>\S+) ?(?:(?P<program>[^\s\[\]:]+)(?:\[(?P<pid>\d+)\])?: ?)?(?P<text>(?s:.*))"
)
# RFC 5424: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]
IETF_PATTERN = (
    r"^<(?P<pri>\d{1,3})>1 (?P<stamp>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+)"
    r" (?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<text>(?s:.*)))?"
)
# ASCII classes, as RE2's: a line sniffs as it parses.
_BSD = re.compile(BSD_PATTERN, re.ASCII)
_IETF = re.compile(IETF_PATTERN, re.ASCII)


def _is_auth_file(filename: str) -> bool:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].rsplit("!", 1)[-1].lower()
    return base.startswith(("auth.log", "secure", "authlog"))


def _looks_like_syslog(head: bytes) -> float:
    """Share of the first complete lines of `head` that parse as syslog with a program tag."""
    lines = [ln for ln in head.split(b"\n", 64)[:-1] if ln.strip()][:8] or [head]
    hits = 0
    for raw in lines:
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        m = _BSD.match(line)
        if (m is not None and m.group("program") is not None) or _IETF.match(line) is not None:
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
        clock = _YearClock(self.year, self.now)
        for first, block in iter_line_blocks(stream, origin, dead):
            lines = split_block(block, first, origin, dead)
            if not len(lines.text):
                continue
            parsed = parse_block(lines.text, clock)
            for i in np.flatnonzero(~parsed.ok).tolist():
                reason = "not a syslog line (no timestamp and host)"
                dead.add(origin, int(lines.numbers[i]), reason, lines.raw(i))
            if lines.mended:
                for i in np.flatnonzero(parsed.ok).tolist():
                    check_utf8(lines.raw(i).rstrip(b"\r"), int(lines.numbers[i]), origin, dead)
            auth = parsed.auth | self.all_auth
            for name, mask in (("linux.auth", auth & parsed.ok), ("linux.syslog", ~auth & parsed.ok)):
                if mask.any():
                    batch = _batch(parsed, mask, lines.numbers, name, origin)
                    for start in range(0, batch.num_rows, self.batch_size):
                        yield batch.slice(start, self.batch_size)


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

    def midnight(self, monthday: str) -> int | None:
        """Seconds since the epoch of midnight (UTC) of `Mmm dd`; None for a day that does not exist."""
        base = self.days.get(monthday, -1)
        if base == -1:
            base = self.days[monthday] = self._midnight(MONTHS[monthday[:3]], int(monthday[4:]))
        return base

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


@dataclass
class ParsedBlock:
    """A block of lines parsed: which parsed, which are authentication events, and the fields."""

    ok: np.ndarray
    auth: np.ndarray
    times: pa.Array
    fields: Assignments


@dataclass
class _Header:
    """The parts of parsed lines that the programs' parsers read, one per row of `rows`."""

    rows: np.ndarray
    pri: pa.Array
    program: pa.Array
    pid: pa.Array
    text: pa.Array


def parse_block(text: pa.Array, clock: _YearClock) -> ParsedBlock:
    """Parse lines (RFC 5424 or 3164 forms) with vectorised regexes into fields and flags."""
    n = len(text)
    out = Assignments(n)
    everything = np.arange(n, dtype=np.int64)
    ietf_like = pc.and_(
        pc.starts_with(text, "<"), pc.match_substring(pc.utf8_slice_codeunits(text, 0, 6), ">1 ")
    ).to_numpy(zero_copy_only=False)
    ietf = pc.extract_regex(text.filter(ietf_like), IETF_PATTERN)
    is_ietf = np.zeros(n, dtype=bool)
    is_ietf[everything[ietf_like]] = ietf.is_valid().to_numpy(zero_copy_only=False)
    bsd = pc.extract_regex(text.filter(~is_ietf), BSD_PATTERN)
    is_bsd = np.zeros(n, dtype=bool)
    is_bsd[everything[~is_ietf]] = bsd.is_valid().to_numpy(zero_copy_only=False)

    micros = np.zeros(n, dtype=np.int64)
    known = np.zeros(n, dtype=bool)
    headers = [
        _bsd_header(out, everything[is_bsd], bsd.filter(bsd.is_valid()), clock, micros, known),
        _ietf_header(out, everything[is_ietf], ietf.filter(ietf.is_valid()), micros, known),
    ]
    header = _Header(
        np.concatenate([h.rows for h in headers]),
        *(
            pa.concat_arrays([getattr(h, part) for h in headers])
            for part in ("pri", "program", "pid", "text")
        ),
    )
    auth = np.zeros(n, dtype=bool)
    _finish(out, header, auth)
    times = pc.cast(pa.array(micros, pa.int64(), mask=~known), pa.timestamp("us", tz="UTC"))
    return ParsedBlock(is_ietf | is_bsd, auth, times, out)


def _bsd_header(
    out: Assignments,
    rows: np.ndarray,
    g: pa.StructArray,
    clock: _YearClock,
    micros: np.ndarray,
    known: np.ndarray,
) -> _Header:
    host = g.field("host")
    for name in ("hostname", _HOST):
        out.set(name, rows, host)
    out.set("message", rows, g.field("text"))
    monthday = g.field("monthday")
    dated = pc.not_equal(monthday, "").to_numpy(zero_copy_only=False)
    if dated.any():
        days: list[int | None] = []
        last, base = None, None
        for value in monthday.filter(dated).to_pylist():
            if value != last:  # logs are in order: the clock sees each day once per run
                last, base = value, clock.midnight(value)
            days.append(base)
        seconds = pa.array(days, pa.int64())
        for unit, part in ((3600, "hh"), (60, "mm"), (1, "ss")):
            seconds = pc.add(seconds, pc.multiply(pc.cast(g.field(part).filter(dated), pa.int64()), unit))
        _set_times(rows[dated], pc.multiply(seconds, 1_000_000), micros, known)
    if not dated.all():
        _set_times(rows[~dated], pc.cast(iso_times(g.field("iso").filter(~dated)), pa.int64()), micros, known)
    return _Header(rows, g.field("pri"), g.field("program"), g.field("pid"), g.field("text"))


def _ietf_header(
    out: Assignments, rows: np.ndarray, g: pa.StructArray, micros: np.ndarray, known: np.ndarray
) -> _Header:
    def dash_absent(part: str) -> pa.Array:
        values = g.field(part)
        return pc.if_else(pc.equal(values, "-"), None, values)

    host = dash_absent("host")
    for name in ("hostname", _HOST):
        out.set(name, rows, host)
    text = g.field("text")
    text = pc.if_else(pc.starts_with(text, "\ufeff"), pc.utf8_slice_codeunits(text, 1), text)  # RFC 5424 BOM
    out.set("message", rows, text)
    out.set("msgid", rows, dash_absent("msgid"))
    out.set("structured_data", rows, dash_absent("sd"))
    _set_times(rows, pc.cast(iso_times(g.field("stamp")), pa.int64()), micros, known)
    return _Header(rows, g.field("pri"), dash_absent("app"), dash_absent("procid"), text)


def _set_times(rows: np.ndarray, values: pa.Array, micros: np.ndarray, known: np.ndarray) -> None:
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    micros[rows[valid]] = values.filter(valid).to_numpy()
    known[rows[valid]] = True


def _finish(out: Assignments, h: _Header, auth: np.ndarray) -> None:
    """Facility, severity, pid, program and the programs' own fields; flags authentication rows."""
    has_pri = pc.fill_null(pc.not_equal(h.pri, ""), False).to_numpy(zero_copy_only=False)
    if has_pri.any():
        value = pc.cast(h.pri.filter(has_pri), pa.int64()).to_numpy()
        codes, inverse = np.unique(value, return_inverse=True)
        facility = codes >> 3
        names = [FACILITIES[f] if f < len(FACILITIES) else str(f) for f in facility.tolist()]
        out.set("facility", h.rows[has_pri], pa.array(names, pa.string()).take(inverse))
        out.set("severity", h.rows[has_pri], pa.array(SEVERITIES, pa.string()).take(codes[inverse] & 7))
        auth[h.rows[has_pri]] |= np.isin(facility[inverse], list(_AUTH_FACILITIES))
    out.set("pid", h.rows, h.pid)
    tagged = pc.fill_null(pc.not_equal(h.program, ""), False).to_numpy(zero_copy_only=False)
    if not tagged.any():
        return
    rows, program, text = h.rows[tagged], h.program.filter(tagged), h.text.filter(tagged)
    out.set("program", rows, program)
    out.set(_PROCESS, rows, program)
    encoded = pc.dictionary_encode(program)
    bases = pa.array([p.split("(", 1)[0].lower() for p in encoded.dictionary.to_pylist()], pa.string())
    base = bases.take(encoded.indices)
    auth[rows] |= pc.is_in(base, value_set=pa.array(sorted(AUTH_PROGRAMS))).to_numpy(
        zero_copy_only=False
    ) | pc.starts_with(text, "pam_").to_numpy(zero_copy_only=False)
    parse_programs(out, rows, program, base, text)


def _batch(
    parsed: ParsedBlock, mask: np.ndarray, numbers: np.ndarray, source: str, origin: str
) -> pa.RecordBatch:
    """One source's rows of a parsed block as a batch."""
    # Usually one source has every row of a block (an auth.log): then nothing is gathered.
    take = None if mask.all() else pa.array(np.flatnonzero(mask))
    n = len(mask) if take is None else len(take)
    names = [_TIME, _RECORD]
    arrays = (
        [parsed.times, pa.array(numbers)]
        if take is None
        else [parsed.times.take(take), pa.array(numbers[mask])]
    )
    for name in parsed.fields.names():
        column = parsed.fields.column(name)
        if take is not None:
            column = column.take(take)
        if column.null_count < n:
            names.append(name)
            arrays.append(column)
    names, arrays = text_columns(names, arrays)
    head = [repeated(source, n), repeated(origin, n)]
    return pa.RecordBatch.from_arrays([*head, *arrays], names=[col("source"), col("file"), *names])
