"""The dead letter: records that could not be read, with where and why; nothing is lost silently."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO

import orjson

RAW_LIMIT = 4096


class DeadLetter:
    """Counts unreadable records and writes each, with its reason, to a JSON-lines file.

    Records read only after a repair (bytes that are not UTF-8, replaced by U+FFFD) are kept as
    events and also written here, marked `kept`, with their original bytes: counted apart
    (`repaired`), never silently altered.
    """

    def __init__(
        self, path: Path | None = None, announce: Callable[[str], None] | None = None, append: bool = True
    ) -> None:
        self.path = path
        self.announce = announce
        #: False: the file is replaced at the first entry (a hunt's dead letter is that hunt's);
        #: True: entries go after what is there (the lake's dead letter keeps every ingest's).
        self.append = append
        self.count = 0
        self.by_file: Counter[str] = Counter()
        self.repaired = 0
        self.repaired_by_file: Counter[str] = Counter()
        self._fh: IO[bytes] | None = None

    def add(self, file: str, record: int | None, reason: str, raw: bytes | str | None = None) -> None:
        """Record one unreadable record (or whole file, with `record=None`)."""
        self.count += 1
        self.by_file[file] += 1
        self._write(file, record, reason, raw, kept=False)

    def repair(self, file: str, record: int, reason: str, raw: bytes) -> None:
        """Record one record that was read only after a repair, with its original bytes."""
        self.repaired += 1
        self.repaired_by_file[file] += 1
        self._write(file, record, reason, raw, kept=True)

    def _write(self, file: str, record: int | None, reason: str, raw: bytes | str | None, kept: bool) -> None:
        where = f"{file}, record {record}" if record is not None else file
        if self.announce is not None:
            self.announce(f"{where}: {reason}")
        if self.path is None:
            return
        entry: dict[str, object] = {"file": file, "record": record, "reason": reason}
        if kept:
            entry["kept"] = True
        if isinstance(raw, bytes):
            try:
                entry["raw"] = raw[:RAW_LIMIT].decode("utf-8")
            except UnicodeDecodeError:
                entry["raw_base64"] = base64.b64encode(raw[:RAW_LIMIT]).decode("ascii")
        elif raw is not None:
            entry["raw"] = raw[:RAW_LIMIT]
        if raw is not None and len(raw) > RAW_LIMIT:
            entry["truncated_from"] = len(raw)
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("ab" if self.append else "wb")
        self._fh.write(orjson.dumps(entry) + b"\n")

    def close(self) -> None:
        """Flush and close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
