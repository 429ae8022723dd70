"""Autodetection: the right source per file, and clear dead letters for what no source reads."""

from __future__ import annotations

import zipfile
from pathlib import Path

from tests.conftest import need
from watchkeeper.sources.autodetect import detect, read_inputs
from watchkeeper.sources.base import Source
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.evtx import EvtxSource
from watchkeeper.sources.winjson import WindowsJsonSource

GOOD = b'{"EventID":4688,"Channel":"Security","Hostname":"h","NewProcessName":"C:\\\\x.exe"}\n'


def test_detects_windows_formats(datasets: Path) -> None:
    sample = need(datasets / "evtx-attack-samples" / "UACME_59_Sysmon.evtx")
    assert detect(sample.read_bytes()[:65536], "renamed.bin") is EvtxSource
    assert detect(GOOD, "x.log") is WindowsJsonSource


def test_cloudtrail_is_not_claimed_as_windows(datasets: Path) -> None:
    root = need(datasets / "cloudtrail-stratus")
    for path in sorted(root.rglob("*.json")):
        assert detect(path.read_bytes()[:65536], str(path)) not in (EvtxSource, WindowsJsonSource), path


def test_empty_binary_and_mixed_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_bytes(b"")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    with zipfile.ZipFile(tmp_path / "logs.zip", "w") as zf:
        zf.writestr("a.json", GOOD * 3 + b"{broken\n" + GOOD)
    reasons: list[str] = []
    seen: list[tuple[str, str | None]] = []
    dead = DeadLetter(announce=reasons.append)
    batches = list(read_inputs([tmp_path], dead, on_member=lambda m, s: seen.append((m.display, s))))
    assert sum(b.num_rows for b in batches) == 4
    assert dead.count == 3
    assert any(r.endswith("empty file") for r in reasons)
    assert any("format not recognised (first bytes: b'\\x00\\x01" in r for r in reasons)
    assert any("line 4" in r for r in reasons)
    assert (f"{tmp_path}/logs.zip!a.json", "windows.json") in seen
    assert batches[0].column("_process").to_pylist()[0] == "C:\\x.exe"


def test_evtx_inside_zip_reads_like_the_file(datasets: Path, tmp_path: Path) -> None:
    sample = need(
        datasets / "evtx-attack-samples" / "AutomatedTestingTools" / "PanacheSysmon_vs_AtomicRedTeam01.evtx"
    )
    with zipfile.ZipFile(tmp_path / "e.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(sample, "dir/sample.evtx")
    dead = DeadLetter()
    rows = sum(b.num_rows for b in read_inputs([tmp_path / "e.zip"], dead))
    assert rows == 565 and dead.count == 0


def test_certain_claim_ends_sniffing_and_ties_go_to_the_first_name() -> None:
    asked: list[str] = []

    def claiming(name: str, confidence: float) -> type[Source]:
        def sniff(cls: type[Source], head: bytes, filename: str) -> float:
            asked.append(cls.name)
            return confidence if head.startswith(b"PROBE") else 0.0

        return type(f"Probe{len(asked)}{confidence}", (Source,), {"name": name, "sniff": classmethod(sniff)})

    first = claiming("0probe.a", 1.0)
    claiming("0probe.b", 1.0)
    claiming("zzzprobe", 1.0)
    try:
        assert detect(b"PROBE", "x") is first
        # Nothing can beat certainty: sources after the first certain claim are not asked.
        assert "0probe.b" not in asked and "zzzprobe" not in asked
    finally:
        for name in ("0probe.a", "0probe.b", "zzzprobe"):
            del Source.registry[name]


def test_a_magic_claims_the_file_before_any_sniffer(datasets: Path) -> None:
    sample = need(datasets / "evtx-attack-samples" / "UACME_59_Sysmon.evtx")
    asked: list[str] = []

    class Eager(Source):
        name = "0eager"

        @classmethod
        def sniff(cls, head: bytes, filename: str) -> float:
            asked.append(filename)
            return 1.0

    try:
        assert detect(sample.read_bytes()[:65536], "a.evtx") is EvtxSource
        assert asked == []
        assert detect(b"text", "b.log") is Eager and asked == ["b.log"]
    finally:
        del Source.registry["0eager"]
