"""windows.evtx: every sample of EVTX-ATTACK-SAMPLES by its manifest, and damaged files."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import need
from watchkeeper.sources.autodetect import read_inputs
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.evtx import MAGIC, EvtxSource


def _count(path: Path, dead: DeadLetter) -> tuple[int, Counter[str]]:
    ids: Counter[str] = Counter()
    n = 0
    with path.open("rb") as fh:
        for batch in EvtxSource().read(fh, str(path), dead):
            n += batch.num_rows
            ids.update(batch.column("EventID").to_pylist())
    return n, ids


def test_attack_samples_match_manifest(datasets: Path) -> None:
    root = need(datasets / "evtx-attack-samples")
    with (root / "_manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) > 200
    for row in rows:
        dead = DeadLetter()
        n, ids = _count(root / row["file"], dead)
        assert n == int(row["records"]), row["file"]
        assert dead.count == 0, row["file"]
        expected = {k: int(v) for k, v in (p.split("=") for p in row["event_ids"].split(";") if p)}
        # The manifest lists the ten most frequent event ids.
        assert {k: ids[k] for k in expected} == expected, row["file"]


def test_truncated_evtx_keeps_the_records_before_the_cut(datasets: Path, tmp_path: Path) -> None:
    sample = need(
        datasets / "evtx-attack-samples" / "AutomatedTestingTools" / "PanacheSysmon_vs_AtomicRedTeam01.evtx"
    )
    cut = tmp_path / "cut.evtx"
    cut.write_bytes(sample.read_bytes()[:300_000])
    dead = DeadLetter()
    n, _ = _count(cut, dead)
    full, _ = _count(sample, DeadLetter())
    assert 0 < n < full
    assert dead.by_file[str(cut)] == dead.count == 1


def test_corrupt_record_is_dead_lettered(datasets: Path, tmp_path: Path) -> None:
    sample = need(
        datasets / "evtx-attack-samples" / "AutomatedTestingTools" / "PanacheSysmon_vs_AtomicRedTeam01.evtx"
    )
    data = bytearray(sample.read_bytes())
    data[0x1000 + 70_000 : 0x1000 + 70_400] = b"\xff" * 400
    bad = tmp_path / "bad.evtx"
    bad.write_bytes(bytes(data))
    reasons: list[str] = []
    dead = DeadLetter(announce=reasons.append)
    n, _ = _count(bad, dead)
    full, _ = _count(sample, DeadLetter())
    assert dead.count >= 1 and n >= full - dead.count - 1 and n < full
    assert all("record" in r for r in reasons)


def test_archive_member_is_spooled(datasets: Path) -> None:
    sample = need(
        datasets / "evtx-attack-samples" / "AutomatedTestingTools" / "PanacheSysmon_vs_AtomicRedTeam01.evtx"
    )

    class Unseekable(io.BytesIO):
        def seekable(self) -> bool:
            return False

    dead = DeadLetter()
    rows = sum(b.num_rows for b in EvtxSource().read(Unseekable(sample.read_bytes()), "m", dead))
    assert rows == 565 and dead.count == 0


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=8192), st.booleans())
def test_arbitrary_bytes_never_raise(data: bytes, with_magic: bool) -> None:
    payload = (MAGIC + data) if with_magic else data
    dead = DeadLetter()
    rows = sum(b.num_rows for b in EvtxSource().read(io.BytesIO(payload), "x.evtx", dead))
    assert rows >= 0 and (rows or dead.count or with_magic)


def _rows(batches: list[pa.RecordBatch]) -> list[tuple[str, int, str]]:
    return [
        (f, r, e)
        for b in batches
        for f, r, e in zip(
            b.column("_file").to_pylist(), b.column("_record").to_pylist(), b.column("EventID").to_pylist(),
            strict=True,
        )
    ]


def test_small_files_share_batches_and_keep_their_provenance(datasets: Path, tmp_path: Path) -> None:
    root = need(datasets / "evtx-attack-samples" / "Lateral Movement")
    files = sorted(root.glob("*.evtx"))[:6]
    alone: list[tuple[str, int, str]] = []
    for path in files:
        with path.open("rb") as fh:
            alone += _rows(list(EvtxSource().read(fh, str(path), DeadLetter())))
    # A batch of 100 rows: files are cut across batches, and batches span several files.
    dead = DeadLetter()
    together = list(read_inputs(files, dead, batch_size=100))
    assert dead.count == 0
    assert [b.num_rows for b in together[:-1]] == [100] * (len(together) - 1)
    assert any(len(set(b.column("_file").to_pylist())) > 1 for b in together)
    assert _rows(together) == alone
    # Core columns are still derived row by row.
    assert all(b.column("_time").null_count == 0 for b in together)


def test_pending_rows_wait_for_flush() -> None:
    source = EvtxSource()
    assert list(source.read_pending(io.BytesIO(b""), "empty.evtx", DeadLetter())) == []
    assert list(source.flush()) == []
