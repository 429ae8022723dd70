"""Web server access logs: Apache/nginx combined and common log format, and nginx JSON access logs.

Fields are named as SigmaHQ's `webserver` rules expect: `c-ip`, `cs-username`, `cs-method`,
`cs-uri-stem` (the path), `cs-uri-query`, `cs-version`, `sc-status`, `sc-bytes`, `cs-referer`,
`cs-user-agent`, `cs-host`. `cs-uri-query` holds the whole request target, path and query
(`/cgi-bin/x.pl?a=1`): the rules match paths in it (`cs-uri-query|contains: '/vpns/'`), so a
query-only value would make most of them blind. The raw request line is kept as `request`.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson
import pyarrow as pa

from watchkeeper.events import col
from watchkeeper.sources.base import LogSourceMapping, Source
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.lines import RowBuffer, check_utf8, iter_lines, parse_time, text_of

_CLF = re.compile(
    rb'(\S+) (\S+) (\S+) \[([^\]]+)\] "((?:[^"\\]|\\.)*)" (\d{3}|-) (\d+|-)'
    rb'(?: "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)")?(.*)',
    re.DOTALL,
)
_STRICT_HEAD = re.compile(rb'\S+ \S+ \S+ \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "')
_CLF_TIME = re.compile(r"(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")
_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_TIME, _SRC, _USER, _ACTION, _OUTCOME, _BYTES, _RECORD, _HOST = (
    col(n) for n in ("time", "src_ip", "user", "action", "outcome", "bytes", "record", "host")
)

#: nginx `log_format` variable names (as JSON keys) -> the W3C names the rules use.
_NGINX = {
    "remote_addr": "c-ip",
    "remote_user": "cs-username",
    "request_method": "cs-method",
    "request_uri": "cs-uri-query",
    "uri": "cs-uri-stem",
    "status": "sc-status",
    "body_bytes_sent": "sc-bytes",
    "bytes_sent": "sc-bytes",
    "http_referer": "cs-referer",
    "http_user_agent": "cs-user-agent",
    "host": "cs-host",
    "http_host": "cs-host",
    "server_protocol": "cs-version",
    "request": "request",
    "content_type": "cs-content-type",
    "http_content_type": "cs-content-type",
}
_NGINX_TIME = ("time_iso8601", "@timestamp", "timestamp", "time_local", "time", "msec")


class WebAccessSource(Source):
    """Access logs of Apache, nginx and other servers writing the NCSA common/combined format."""

    name = "web.access"
    logsources = (
        LogSourceMapping(category="webserver"),
        LogSourceMapping(product="apache", service="access"),
        LogSourceMapping(product="nginx", service="access"),
    )

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """Common/combined log lines, or JSON lines with nginx access-log variables."""
        lines = [ln for ln in head.split(b"\n", 64)[:-1] if ln.strip()][:8] or [head]
        if all(_STRICT_HEAD.match(ln) for ln in lines):
            return 0.9
        first = lines[0].lstrip(b"\xef\xbb\xbf \t")
        if (
            first.startswith(b"{")
            and b'"remote_addr"' in first
            and (b'"request"' in first or b'"request_uri"' in first or b'"status"' in first)
        ):
            return 0.85
        return 0.0

    def read(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        """Yield batches of access-log requests (text or nginx JSON, decided per line)."""
        out = RowBuffer(self.name, origin, self.batch_size)
        dates: dict[str, int | None] = {}
        for number, line in iter_lines(stream, origin, dead):
            if not line.strip():
                continue
            if line.lstrip()[:1] in (b"{", b"["):
                row = _json_row(line, origin, number, dead)
            else:
                row = _text_row(line, dates)
                if row is None:
                    dead.add(origin, number, "not a common/combined log format line", line)
                else:
                    check_utf8(line, number, origin, dead)  # kept: say so if its bytes were replaced
            if row is None:
                continue
            row[_RECORD] = number
            batch = out.add(row)
            if batch is not None:
                yield batch
        batch = out.flush()
        if batch is not None:
            yield batch


def _text_row(line: bytes, dates: dict[str, int | None]) -> dict[str, Any] | None:
    m = _CLF.match(line)
    if m is None:
        return None
    ip, ident, user, stamp, request, status, size, referer, agent, rest = (
        None if g is None else g.decode("utf-8", "replace") for g in m.groups()
    )
    row: dict[str, Any] = {"c-ip": ip, _SRC: ip, "request": request, _TIME: _clf_time(stamp or "", dates)}
    if user != "-":
        row["cs-username"] = user
        row[_USER] = user
    if ident != "-":
        row["ident"] = ident
    _request(row, request or "")
    if status != "-":
        row["sc-status"] = status
    if size != "-":
        row["sc-bytes"] = size
        row[_BYTES] = int(size or 0)
    if referer is not None and referer != "-":
        row["cs-referer"] = referer
    if agent is not None and agent != "-":
        row["cs-user-agent"] = agent
    if rest and rest.strip():
        row["extra"] = rest.strip()  # fields a custom LogFormat appends (vhost, duration …)
    _outcome(row)
    return row


def _request(row: dict[str, Any], request: str) -> None:
    parts = request.split(" ")
    if len(parts) == 3 and parts[0].isalpha():
        method, target, version = parts
        row["cs-method"] = method
        row[_ACTION] = method
        row["cs-uri-query"] = target
        row["cs-uri-stem"] = target.split("?", 1)[0]
        row["cs-version"] = version
    elif len(parts) == 2 and parts[0].isalpha():  # HTTP/0.9 style: no version
        row["cs-method"] = parts[0]
        row[_ACTION] = parts[0]
        row["cs-uri-query"] = parts[1]
        row["cs-uri-stem"] = parts[1].split("?", 1)[0]


def _outcome(row: dict[str, Any]) -> None:
    status = row.get("sc-status")
    if status and status.isdigit():
        row[_OUTCOME] = "success" if int(status) < 400 else "failure"


def _clf_time(stamp: str, dates: dict[str, int | None]) -> int | None:
    """`17/May/2015:10:05:03 +0000` as µs since the epoch (the date part cached per file)."""
    key = stamp[:11] + stamp[20:]
    base = dates.get(key, -1)
    if base == -1:
        m = _CLF_TIME.match(stamp)
        if m is None or m.group(2) not in _MONTHS:
            base = None
        else:
            day, mon, year, _, _, _, sign, oh, om = m.groups()
            offset = (int(oh) * 3600 + int(om) * 60) * (1 if sign == "+" else -1)
            base = calendar.timegm((int(year), _MONTHS[mon], int(day), 0, 0, 0, 0, 0, 0)) - offset
        dates[key] = base
    if base is None:
        return None
    try:
        return (base + int(stamp[12:14]) * 3600 + int(stamp[15:17]) * 60 + int(stamp[18:20])) * 1_000_000
    except ValueError:
        return None


def _json_row(line: bytes, origin: str, number: int, dead: DeadLetter) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        dead.add(origin, number, f"invalid JSON: {exc}", line)
        return None
    if not isinstance(obj, dict):
        dead.add(origin, number, f"JSON line is a {type(obj).__name__}, not an object", line)
        return None
    row: dict[str, Any] = {}
    for key, value in obj.items():
        text = text_of(value)
        if not key.startswith("_"):
            row[key] = text
        target = _NGINX.get(key)
        if target is not None and text is not None and target not in row:
            row[target] = text
    if "cs-method" not in row and row.get("request"):
        _request(row, row["request"])
    elif "cs-uri-query" in row:
        if "args" in obj and obj["args"] and "?" not in row["cs-uri-query"]:
            row["cs-uri-query"] += "?" + str(obj["args"])
        row.setdefault("cs-uri-stem", row["cs-uri-query"].split("?", 1)[0])
    for key in _NGINX_TIME:
        if key in obj:
            value = obj[key]
            micros = parse_time(value)
            if micros is None and isinstance(value, str):
                micros = _clf_time(value, {})
            row[_TIME] = micros
            break
    row[_SRC] = row.get("c-ip")
    row[_USER] = row.get("cs-username") if row.get("cs-username") != "-" else None
    row[_ACTION] = row.get("cs-method")
    size = row.get("sc-bytes")
    row[_BYTES] = int(size) if size and size.isdigit() else None
    if row.get("cs-host"):
        row[_HOST] = row["cs-host"]
    _outcome(row)
    return row
