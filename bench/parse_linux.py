"""Throughput of the Linux, network and web parsers on one core (prints lines or records per second).

CPU time (process_time) is measured, so other work on a shared machine skews it less.
Each input is a shared data set file repeated in memory to a few hundred thousand records, so
the figure measures parsing into batches, not disk or decompression.
Run: .venv/bin/python bench/parse_linux.py [datasets folder]
"""

from __future__ import annotations

import gzip
import io
import sys
import time
from pathlib import Path

from watchkeeper.sources.base import Source
from watchkeeper.sources.deadletter import DeadLetter


def _repeat(data: bytes, target_lines: int) -> bytes:
    if not data.endswith(b"\n"):
        data += b"\n"
    return data * max(1, target_lines // max(1, data.count(b"\n")))


def measure(label: str, source: Source, data: bytes) -> None:
    """Parse `data` with `source` three times and print the best rate."""
    best = 0.0
    rows = 0
    for _ in range(3):
        dead = DeadLetter()
        start = time.process_time()
        rows = sum(b.num_rows for b in source.read(io.BytesIO(data), label, dead))
        best = max(best, rows / max(1e-9, time.process_time() - start))
    print(f"{label:<28} {rows:>9,} records  {best:>11,.0f} records/s  dead={dead.count}")


def main() -> None:
    """Run every benchmark over the shared data sets."""
    from watchkeeper.sources.auditd import AuditdSource
    from watchkeeper.sources.syslog import SyslogSource
    from watchkeeper.sources.webaccess import WebAccessSource
    from watchkeeper.sources.zeek import ZeekSource

    root = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parents[2] / "shared" / "datasets"
    )
    auth = (root / "elastic-examples/auth/auth.log").read_bytes()
    measure("syslog auth.log", SyslogSource(year=2024), _repeat(auth, 200_000))
    linux = (root / "loghub/Linux/Linux_2k.log").read_bytes()
    measure("syslog loghub Linux", SyslogSource(year=2024), _repeat(linux, 200_000))
    tsv = gzip.decompress((root / "zeek-wrccdc/zeek-default/dns.log.gz").read_bytes())
    header = b"".join(
        ln + b"\n" for ln in tsv.split(b"\n") if ln.startswith(b"#") and not ln.startswith(b"#close")
    )
    body = b"".join(ln + b"\n" for ln in tsv.split(b"\n") if ln and not ln.startswith(b"#"))
    measure("zeek TSV dns", ZeekSource(), header + body * 4)
    js = gzip.decompress((root / "zeek-wrccdc/zeek-json/dns.json.gz").read_bytes())
    measure("zeek JSON dns", ZeekSource(), js)
    apache = (root / "elastic-examples/apache/apache_logs").read_bytes()
    measure("web access (apache)", WebAccessSource(), _repeat(apache, 200_000))
    zips = sorted((root / "security-datasets/datasets/atomic/linux").rglob("*.zip"))
    if zips:
        import zipfile

        with zipfile.ZipFile(zips[0]) as z:
            audit = z.read(z.namelist()[0])
        measure("auditd", AuditdSource(), _repeat(audit, 200_000))


if __name__ == "__main__":
    main()
