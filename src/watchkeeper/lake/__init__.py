"""The event lake: Parquet partitioned by source and day, written atomically and idempotently.

`LakeWriter` ingests batches, `Lake` scans them back (for `hunt --lake`) and opens a read-only
DuckDB over one view per source and an `events` view of the core fields.
"""

from __future__ import annotations

from watchkeeper.lake.reader import EVENTS_COLUMNS, Lake
from watchkeeper.lake.writer import EVENT_ID, IngestStats, LakeWriter, SourceStats, compact

__all__ = ["EVENTS_COLUMNS", "EVENT_ID", "IngestStats", "Lake", "LakeWriter", "SourceStats", "compact"]
