"""The lake's files on disk: partition paths, atomic writes, the writer lock and crash recovery.

Layout: `DIR/source=<name>/day=<YYYY-MM-DD|unknown>/part-<stamp>-<id>.parquet`. Only names matching
`part-*.parquet` are data; everything a writer has not finished is hidden (`.`-prefixed) and never
matches, so a reader never sees a half-written file. A compaction first records what it replaces in
a journal (`.compact-<id>.json`) and only then publishes its output, so a crash between publishing
and deleting the inputs is resolved the same way by readers (inputs ignored) and by the next writer
(inputs deleted).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import orjson

from watchkeeper.errors import LakeError, Where

UNKNOWN_DAY = "unknown"
PART_GLOB = "part-*.parquet"
TEMP_SUFFIX = ".tmp"
JOURNAL_PREFIX = ".compact-"
EXPIRED_PREFIX = ".expired-"
LOCK_NAME = ".lock"
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_source_name(name: str) -> str:
    """Return `name` if it is safe as a directory and view name, else raise `LakeError`."""
    if not _SOURCE_NAME.fullmatch(name) or ".." in name:
        raise LakeError(f"source name {name!r} cannot name a lake partition")
    return name


def view_name(source: str) -> str:
    """The DuckDB view of a source: dots and dashes become underscores (`aws.cloudtrail` -> `aws_cloudtrail`)."""
    return source.replace(".", "_").replace("-", "_")


@dataclass(frozen=True)
class Partition:
    """One directory of the lake: a source and a day (`None` for events without a time)."""

    source: str
    day: date | None

    @property
    def day_name(self) -> str:
        """The `day=` value of the directory."""
        return self.day.isoformat() if self.day is not None else UNKNOWN_DAY

    def path(self, root: Path) -> Path:
        """The directory of this partition under the lake root."""
        return root / f"source={self.source}" / f"day={self.day_name}"


def partitions(root: Path) -> Iterator[tuple[Partition, Path]]:
    """Every partition directory of the lake (hidden and malformed directories are skipped)."""
    if not root.is_dir():
        return
    for sdir in sorted(root.glob("source=*")):
        source = sdir.name.removeprefix("source=")
        if not sdir.is_dir() or not _SOURCE_NAME.fullmatch(source):
            continue
        for ddir in sorted(sdir.glob("day=*")):
            value = ddir.name.removeprefix("day=")
            if value == UNKNOWN_DAY:
                yield Partition(source, None), ddir
                continue
            try:
                day = date.fromisoformat(value)
            except ValueError:
                continue
            yield Partition(source, day), ddir


def _journals(directory: Path) -> Iterator[tuple[Path, str, list[str]]]:
    for journal in directory.glob(JOURNAL_PREFIX + "*.json"):
        try:
            entry = orjson.loads(journal.read_bytes())
            yield journal, str(entry["output"]), [str(n) for n in entry["inputs"]]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise LakeError("unreadable compaction journal", Where(file=str(journal))) from exc


def data_files(directory: Path) -> list[Path]:
    """The published data files of a partition, without inputs a finished compaction replaced."""
    files = {p.name: p for p in directory.glob(PART_GLOB)}
    for _journal, output, inputs in _journals(directory):
        if output in files:
            for name in inputs:
                files.pop(name, None)
    return [files[n] for n in sorted(files)]


def new_part_name() -> str:
    """A fresh, sortable data file name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"


def temp_path(final: Path) -> Path:
    """The hidden name a file is written under before it is published as `final`."""
    return final.with_name(f".{final.name}{TEMP_SUFFIX}")


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a written file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp: Path, final: Path) -> None:
    """Atomically make a fully written, fsynced temp file visible under its final name."""
    fsync_file(temp)
    temp.replace(final)
    fsync_dir(final.parent)


def write_journal(directory: Path, output: str, inputs: list[str]) -> Path:
    """Durably record that `output`, once published, replaces `inputs`."""
    journal = directory / f"{JOURNAL_PREFIX}{uuid.uuid4().hex[:12]}.json"
    temp = temp_path(journal)
    temp.write_bytes(orjson.dumps({"output": output, "inputs": inputs}))
    publish(temp, journal)
    return journal


def recover(root: Path) -> int:
    """Finish or undo what a crashed writer left; return how many leftovers were removed.

    Call only while holding the writer lock: it deletes temp files, which belong to no one then.
    """
    removed = 0
    for leftover in root.glob(EXPIRED_PREFIX + "*"):
        shutil.rmtree(leftover, ignore_errors=False)
        removed += 1
    for _partition, directory in partitions(root):
        for temp in directory.glob(f".*{TEMP_SUFFIX}"):
            temp.unlink()
            removed += 1
        for journal, output, inputs in _journals(directory):
            if (directory / output).exists():
                for name in inputs:
                    (directory / name).unlink(missing_ok=True)
            journal.unlink()
            removed += 1
        fsync_dir(directory)
    return removed


def expire(root: Path, partition: Path) -> None:
    """Remove a partition so that readers see it vanish at once (rename first, then delete)."""
    hidden = root / f"{EXPIRED_PREFIX}{uuid.uuid4().hex[:12]}"
    partition.replace(hidden)
    fsync_dir(root)
    shutil.rmtree(hidden)


@contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    """Hold the lake's exclusive writer lock (one ingest or compaction at a time)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK_NAME).open("a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise LakeError(
                "another writer holds the lake", Where(file=str(root)), hint="wait for it to finish"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
