"""Walking inputs: directories, zip, gzip, tar, tar.gz, nested archives, damaged archives."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import need
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.inputs import iter_members

LINES = b"".join(b'{"EventID":%d,"Channel":"Security"}\n' % i for i in range(2000))


def _walk(paths: list[Path], dead: DeadLetter) -> dict[str, bytes]:
    out = {}
    for member in iter_members(paths, dead):
        with member.open() as fh:
            out[member.display] = fh.read()
    return out


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_directory_and_archives(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "plain.json").write_bytes(LINES)
    (tmp_path / "a.gz").write_bytes(gzip.compress(LINES))
    # Named .bin: archives are recognised by their magic bytes.
    (tmp_path / "c.bin").write_bytes(_tar_gz({"x/y.json": LINES}))
    with zipfile.ZipFile(tmp_path / "d.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inner.json", LINES)
        zf.writestr("nested.tar.gz", _tar_gz({"deep.json": LINES}))
    dead = DeadLetter()
    got = _walk([tmp_path], dead)
    assert dead.count == 0
    base = str(tmp_path)
    assert sorted(got) == [
        f"{base}/a.gz!a",
        f"{base}/b/plain.json",
        f"{base}/c.bin!x/y.json",
        f"{base}/d.zip!inner.json",
        f"{base}/d.zip!nested.tar.gz!deep.json",
    ]
    assert all(v == LINES for v in got.values())


def test_corrupt_zip_member_is_dead_lettered(tmp_path: Path) -> None:
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("bad.json", LINES)
        zf.writestr("good.json", LINES)
    data = bytearray(path.read_bytes())
    at = data.index(b'{"EventID":100')
    data[at : at + 2] = b"XX"  # stored bytes changed: the CRC check fails at the end of the member
    path.write_bytes(bytes(data))
    reasons: list[str] = []
    dead = DeadLetter(announce=reasons.append)
    got = _walk([path], dead)
    assert got[f"{path}!good.json"] == LINES
    assert dead.by_file[f"{path}!bad.json"] == 1 and dead.count == 1
    assert "damaged" in reasons[0]


def test_damaged_deflated_members_are_dead_lettered(tmp_path: Path) -> None:
    # Deflated members are inflated by ISA-L (`zipmember`): its checks must catch what zipfile's do.
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bad_crc.json", LINES)
        zf.writestr("bad_data.json", LINES * 3)
        zf.writestr("good.json", LINES)
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    data = bytearray(path.read_bytes())
    # The CRC-32 the central directory declares for bad_crc.json, made wrong.
    entry = data.index(b"bad_crc.json", data.index(b"PK\x01\x02")) - 46  # name follows a 46-byte header
    data[entry + 16] ^= 0xFF
    # Compressed bytes of bad_data.json scrambled in the middle.
    start = infos["bad_data.json"].header_offset + 30 + len("bad_data.json")
    middle = start + infos["bad_data.json"].compress_size // 2
    data[middle : middle + 64] = bytes(range(64))
    path.write_bytes(bytes(data))
    reasons: list[str] = []
    dead = DeadLetter(announce=reasons.append)
    got = _walk([path], dead)
    assert got[f"{path}!good.json"] == LINES
    assert dead.by_file[f"{path}!bad_crc.json"] == 1 and dead.by_file[f"{path}!bad_data.json"] == 1
    assert dead.count == 2
    assert all("damaged" in r for r in reasons), reasons
    assert any("CRC" in r for r in reasons)


def test_truncated_gzip_yields_what_came_before(tmp_path: Path) -> None:
    data = gzip.compress(LINES * 20)
    path = tmp_path / "t.json.gz"
    path.write_bytes(data[: len(data) // 2])
    dead = DeadLetter()
    got = _walk([path], dead)
    (text,) = got.values()
    assert 0 < len(text) < len(LINES) * 20 and (LINES * 20).startswith(text)
    assert dead.count == 1


def test_missing_path_and_not_an_archive(tmp_path: Path) -> None:
    dead = DeadLetter()
    (tmp_path / "fake.zip").write_bytes(b"PK\x03\x04 not really a zip")
    assert _walk([tmp_path / "nope", tmp_path / "fake.zip"], dead) == {}
    assert dead.count == 2


def test_otrf_tar_gz_member_counts(datasets: Path) -> None:
    root = need(datasets / "security-datasets")
    archive = root / "datasets/atomic/windows/persistence/host/covenant_persistwmi.tar.gz"
    dead = DeadLetter()
    got = _walk([need(archive)], dead)
    assert dead.count == 0
    (text,) = got.values()
    assert text.count(b"\n") == 1001  # manifest.csv: 1001 events


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4096), st.sampled_from([b"", b"PK\x03\x04", b"\x1f\x8b\x08\x00"]))
def test_arbitrary_bytes_never_raise(tmp_path: Path, data: bytes, magic: bytes) -> None:
    path = tmp_path / "blob"
    path.write_bytes(magic + data)
    dead = DeadLetter()
    got = _walk([path], dead)
    assert got or dead.count
