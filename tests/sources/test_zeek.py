"""Zeek TSV and JSON over the WRCCDC sample (the same traffic in both forms), bad rows, arbitrary input."""

from __future__ import annotations

import gzip
import io
from collections import Counter
from pathlib import Path

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from watchkeeper.sources.base import Source
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.zeek import ZEEK_SOURCES, ZeekSource

HEADER = (
    b"#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    b"#fields\tts\tuid\tid.orig_h\tid.resp_h\torig_bytes\tresp_bytes\tlocal_orig\n"
    b"#types\ttime\tstring\taddr\taddr\tcount\tcount\tbool\n"
)


def read(
    data: bytes, origin: str = "conn.log", batch_size: int = 8192
) -> tuple[list[pa.RecordBatch], DeadLetter]:
    dead = DeadLetter()
    batches = list(ZeekSource(batch_size=batch_size).read(io.BytesIO(data), origin, dead))
    assert all(0 < b.num_rows <= batch_size for b in batches)
    return batches, dead


def totals(folder: Path) -> tuple[Counter[str], Counter[str], int]:
    per_source: Counter[str] = Counter()
    dns_clients: Counter[str] = Counter()
    dead_total = 0
    for path in sorted(folder.glob("*.gz")):
        with gzip.open(path, "rb") as fh:
            batches, dead = read(fh.read(), path.name)
        dead_total += dead.count
        for b in batches:
            per_source[b.column("_source")[0].as_py()] += b.num_rows
            if b.column("_source")[0].as_py() == "zeek.dns":
                dns_clients.update(b.column("_src_ip").to_pylist())
    return per_source, dns_clients, dead_total


def test_tsv_and_json_give_the_same_records(datasets: Path) -> None:
    tsv, tsv_dns, tsv_dead = totals(datasets / "zeek-wrccdc/zeek-default")
    js, js_dns, js_dead = totals(datasets / "zeek-wrccdc/zeek-json")
    assert sum(tsv.values()) == sum(js.values()) == 158_439
    assert tsv_dead == js_dead == 0
    assert tsv == js
    assert tsv_dns == js_dns and None not in tsv_dns


def test_tsv_core_fields_and_bools(datasets: Path) -> None:
    with gzip.open(datasets / "zeek-wrccdc/zeek-default/dns.log.gz", "rb") as fh:
        text = fh.read()
    batches, dead = read(text, "dns.log")
    first = batches[0].slice(0, 1).to_pylist()[0]
    line = next(ln for ln in text.split(b"\n") if not ln.startswith(b"#")).split(b"\t")
    assert first["_time"].timestamp() == float(line[0].decode())
    assert first["_src_ip"] == first["id.orig_h"] == line[2].decode()
    assert first["_dst_ip"] == line[4].decode()
    assert first["AA"] in ("true", "false") and first["_record"] == 9
    assert dead.count == 0


def test_per_type_sources_are_registered_with_mappings(datasets: Path) -> None:
    with gzip.open(datasets / "zeek-wrccdc/zeek-default/dns.log.gz", "rb") as fh:
        head = fh.read(65536)
    scores = {
        name: cls.sniff(head, "dns.log.gz")
        for name, cls in Source.registry.items()
        if name.startswith("zeek")
    }
    assert max(scores, key=lambda n: scores[n]) == "zeek.dns"
    assert Source.registry["zeek.smb_files"] is ZEEK_SOURCES["smb_files"]
    assert any(m.serves("zeek", None, "smb_files") for m in ZEEK_SOURCES["smb_files"].logsources)
    assert not any(m.serves("zeek", None, "dns") for m in ZEEK_SOURCES["http"].logsources)
    assert ZeekSource.sniff(b"Mar 27 13:06:56 host sshd[1]: x\n", "auth.log") == 0.0


def test_short_row_long_line_and_bytes() -> None:
    rows = (
        b"1.5\tC1\t10.0.0.1\t10.0.0.2\t100\t-\tT\n"
        b"2.5\tC2\t10.0.0.1\n"
        + b"3.5\tC3\t"
        + b"x" * (10 << 20)
        + b"\n"
        + b"4.5\tC4\t10.0.0.3\t10.0.0.4\t1\t2\t(empty)\n#close\t2024\n"
    )
    batches, dead = read(HEADER + rows)
    table = pa.Table.from_batches(batches)
    assert table.column("_record").to_pylist() == [8, 11]
    assert table.column("_bytes").to_pylist() == [100, 3]
    assert table.column("local_orig").to_pylist() == ["true", None]
    assert table.column("_source").to_pylist() == ["zeek.conn"] * 2
    assert dead.count == 2


def test_tsv_bad_utf8_becomes_replacement_characters_and_is_reported() -> None:
    rows = b"1.5\tC1\t10.0.0.1\t10.0.0.2\t1\t2\tT\n2.5\tC\xff2\t10.0.0.1\t10.0.0.2\t1\t2\tF\n"
    batches, dead = read(HEADER + rows)
    table = pa.Table.from_batches(batches)
    assert table.column("uid").to_pylist() == ["C1", "C\ufffd2"]
    assert dead.count == 0 and dead.repaired == 1
    said: list[str] = []
    list(ZeekSource().read(io.BytesIO(HEADER + rows), "conn.log", DeadLetter(announce=said.append)))
    line = HEADER.count(b"\n") + 2
    assert said == [
        f"conn.log, record {line}: line {line} is not valid UTF-8 (byte 6): kept, with U+FFFD in place of the bad bytes"
    ]


def test_json_bad_lines() -> None:
    data = b'{"_path":"dns","ts":1.0,"id.orig_h":"1.2.3.4","answers":["a","b"]}\n[1,2]\n{bad\n{"ts":"2024-01-01T00:00:00Z"}\n'
    batches, dead = read(data, "dns.json")
    rows = pa.concat_tables(
        [pa.Table.from_batches([b]) for b in batches], promote_options="default"
    ).to_pylist()
    assert [r["_record"] for r in rows] == [1, 4]
    assert rows[0]["answers"] == "a,b" and rows[0]["_src_ip"] == "1.2.3.4"
    assert {r["_source"] for r in rows} == {"zeek.dns"}
    assert dead.count == 2


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=80).filter(lambda b: b"\n" not in b and b"\r" not in b), max_size=15))
def test_arbitrary_tsv_rows_never_raise(lines: list[bytes]) -> None:
    batches, dead = read(HEADER + b"\n".join(lines) + b"\n", batch_size=2)
    kept = sum(b.num_rows for b in batches)
    assert kept + dead.count <= len(lines)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    read(data, "x.log")
    read(b"#" + data, "x.log")
