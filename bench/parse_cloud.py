"""Throughput of the CloudTrail source over JSON lines: prints events/s on one core.

The input is synthetic: the real records of the shared data sets (Stratus and OTRF AWS),
repeated with fresh eventIDs into a temporary JSON-lines file. Run:
`.venv/bin/python bench/parse_cloud.py [events]`.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import orjson

from watchkeeper.sources.cloudtrail import CloudTrail
from watchkeeper.sources.deadletter import DeadLetter

DATASETS = Path(
    os.environ.get("WATCHKEEPER_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets")
)


def real_records() -> list[dict[str, Any]]:
    """Every readable CloudTrail record of the shared data sets."""
    records: list[dict[str, Any]] = []
    for path in sorted((DATASETS / "cloudtrail-stratus").glob("*.json")):
        try:
            records.extend(orjson.loads(path.read_bytes())["Records"])
        except orjson.JSONDecodeError:
            continue  # the deliberately malformed file
    archive = DATASETS / "security-datasets/datasets/atomic/aws/collection/ec2_proxy_s3_exfiltration.zip"
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            records.extend(orjson.loads(line) for line in zf.read(member).splitlines() if line.strip())
    return records


def main() -> None:
    """Write the synthetic file, parse it, print the figures."""
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    records = real_records()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cloudtrail.jsonl"
        with path.open("wb") as fh:
            for i in range(total):
                record = dict(records[i % len(records)])
                record["eventID"] = str(uuid.UUID(int=i))
                fh.write(orjson.dumps(record) + b"\n")
        size = path.stat().st_size
        dead = DeadLetter()
        start = time.perf_counter()
        rows = 0
        with path.open("rb") as fh:
            for batch in CloudTrail().read(io.BufferedReader(fh), str(path), dead):
                rows += batch.num_rows
        elapsed = time.perf_counter() - start
    print(
        f"{rows} events, {size / 1e6:.1f} MB, {elapsed:.2f} s: {rows / elapsed:,.0f} events/s, "
        f"{size / 1e6 / elapsed:.1f} MB/s, dead letters {dead.count}"
    )


if __name__ == "__main__":
    main()
