"""ColumnBuilder: records' texts kept per batch, their buffers recycled only once no batch holds them."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from tests.conftest import need
from watchkeeper.events import RAW_COLUMN
from watchkeeper.sources import winjson
from watchkeeper.sources.base import FieldSelection
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.windows import _Texts
from watchkeeper.sources.winjson import WindowsJsonSource

_NOTHING = FieldSelection(route="Channel", by_route={}, default=frozenset(), everything=frozenset())


def _lines(datasets: Path) -> bytes:
    root = need(datasets / "security-datasets" / "datasets")
    archive = next((p for p in sorted(root.rglob("*.zip")) if "mimikatz_extract_keys" in p.name), None)
    if archive is None:
        pytest.skip("the OTRF sample archive is absent")
    with zipfile.ZipFile(archive) as zf:
        return zf.read(zf.namelist()[0])


def _batches(data: bytes) -> list:
    source = WindowsJsonSource()
    source.select(_NOTHING)
    return source.read(io.BytesIO(data), "sample.json", DeadLetter())


def _digests(batch) -> list[str]:
    return [hashlib.md5(t).hexdigest() for t in batch.column(RAW_COLUMN).to_pylist()]


def test_held_batches_keep_their_texts_and_released_buffers_are_reused(
    datasets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _lines(datasets)
    expected = [hashlib.md5(line).hexdigest() for line in data.splitlines(keepends=True) if line.strip()]
    monkeypatch.setattr(winjson, "BATCH_BYTES", 256 * 1024)  # many batches from one archive member
    monkeypatch.setattr(_Texts, "_recycled", [])

    # Each batch's texts read while it is the only one held: buffers are recycled.
    one_at_a_time: list[str] = []
    addresses = set()
    for batch in _batches(data):
        one_at_a_time += _digests(batch)
        addresses.add(batch.column(RAW_COLUMN).buffers()[2].address)
        del batch
    # Every batch held to the end: none may share a buffer with another.
    held = list(_batches(data))
    all_held = [d for batch in held for d in _digests(batch)]
    held_addresses = [batch.column(RAW_COLUMN).buffers()[2].address for batch in held]

    assert len(held) > 4
    assert one_at_a_time == all_held == expected
    assert len(addresses) <= 3 < len(held)  # two batches in flight at most, then reuse
    assert len(set(held_addresses)) == len(held)
