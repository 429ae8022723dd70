"""Apache/nginx access logs: the Elastic sample, nginx JSON, what is not an access log, arbitrary input."""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.webaccess import WebAccessSource


def read(data: bytes, batch_size: int = 8192) -> tuple[list[dict[str, Any]], DeadLetter]:
    dead = DeadLetter()
    batches = list(WebAccessSource(batch_size=batch_size).read(io.BytesIO(data), "access.log", dead))
    assert all(b.num_rows <= batch_size for b in batches)
    return [r for b in batches for r in b.to_pylist()], dead


def test_apache_sample(datasets: Path) -> None:
    data = (datasets / "elastic-examples/apache/apache_logs").read_bytes()
    assert WebAccessSource.sniff(data[:65536], "apache_logs") > 0.8
    rows, dead = read(data)
    assert len(rows) == len(data.splitlines()) == 10_000
    assert dead.count == 0
    statuses = Counter(m.group(1).decode() for m in re.finditer(rb'" (\d{3}) ', data))
    assert Counter(r["sc-status"] for r in rows) == statuses
    assert sum(1 for r in rows if r["cs-method"] == "GET") == data.count(b'"GET ')
    first = rows[0]
    assert first["c-ip"] == first["_src_ip"] == "83.149.9.216"
    assert first["cs-uri-stem"] == first["cs-uri-query"].split("?")[0]
    assert first["_time"].isoformat() == "2015-05-17T10:05:03+00:00"
    assert first["_bytes"] == int(first["sc-bytes"]) and first["_outcome"] == "success"


def test_not_access_logs_are_not_claimed(datasets: Path) -> None:
    for name in (
        "loghub/Apache/Apache_2k.log",
        "elastic-examples/nginxplus/nginxplus_json_logs",
        "elastic-examples/auth/auth.log",
    ):
        assert WebAccessSource.sniff((datasets / name).read_bytes()[:65536], name) == 0.0


def test_nginx_json_and_common_format() -> None:
    data = (
        b'{"time_iso8601":"2024-05-01T10:00:00+02:00","remote_addr":"10.0.0.9","remote_user":"-",'
        b'"request":"POST /login.php?u=a HTTP/1.1","status":401,"body_bytes_sent":12,'
        b'"http_user_agent":"curl/8","http_referer":"-"}\n'
        b'10.0.0.1 - bob [01/May/2024:10:00:00 -0300] "GET /a?b=1 HTTP/1.0" 200 -\n'
        b"[1, 2]\n"
    )
    assert WebAccessSource.sniff(data, "access.json") > 0.8
    rows, dead = read(data)
    assert dead.count == 1 and len(rows) == 2
    nginx, common = rows
    assert nginx["cs-method"] == "POST" and nginx["cs-uri-query"] == "/login.php?u=a"
    assert nginx["sc-status"] == "401" and nginx["_outcome"] == "failure" and nginx["_bytes"] == 12
    assert nginx["_time"].isoformat() == "2024-05-01T08:00:00+00:00" and nginx["_user"] is None
    assert common["_user"] == "bob" and common["cs-uri-stem"] == "/a" and common["_time"].hour == 13
    assert common["_bytes"] is None


def test_bad_lines() -> None:
    good = b'1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5 "-" "ua \xe9"\n'
    rows, dead = read(good + b"x" * (10 << 20) + b"\nnot a log line\n" + good)
    assert len(rows) == 2 and dead.count == 2
    assert [r["_record"] for r in rows] == [1, 4]
    assert rows[0]["cs-user-agent"] == "ua \ufffd"
    assert dead.repaired == 2  # the latin-1 agent, kept and reported, on both good lines


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=150), max_size=15))
def test_arbitrary_lines_never_raise(lines: list[bytes]) -> None:
    rows, dead = read(b"\n".join(lines), batch_size=2)
    assert len(rows) + dead.count == sum(1 for ln in b"\n".join(lines).split(b"\n") if ln.strip())


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60), st.integers(100, 599))
def test_arbitrary_requests(target: str, status: int) -> None:
    target = target.replace("\n", "").replace("\r", "").replace('"', "")
    line = f'1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET {target} HTTP/1.1" {status} 5'.encode()
    rows, dead = read(line)
    assert dead.count == 0 and rows[0]["sc-status"] == str(status)
    assert pa is not None
