"""The source protocol: bytes in, Arrow batches out; registered by subclassing."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, ClassVar

import pyarrow as pa

from watchkeeper.sources.deadletter import DeadLetter

DEFAULT_BATCH_SIZE = 8192


@dataclass(frozen=True)
class LogSourceMapping:
    """How events of a source answer a Sigma `logsource` (product / category / service).

    `conditions` restrict the events (column -> accepted values, compared case-insensitively);
    `renames` map a field name the rules use to the column that holds it in this source
    (Security 4688 keeps `Image` in `NewProcessName`).
    """

    product: str | None = None
    category: str | None = None
    service: str | None = None
    conditions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    renames: Mapping[str, str] = field(default_factory=dict)

    def serves(self, product: str | None, category: str | None, service: str | None) -> bool:
        """Whether a rule with this logsource can match events selected by this mapping."""
        for want, have in ((product, self.product), (category, self.category), (service, self.service)):
            if want is not None and want.lower() != (have or "").lower():
                return False
        return True


@dataclass(frozen=True)
class FieldSelection:
    """The fields a hunt's rules read from a source's events, which may depend on one routing field.

    Windows events are routed by `Channel`: Sysmon rules never read a PowerShell event's
    `Message`. Names and values are lower-cased. `by_route` holds, per value of `route`, the
    fields of events with that value; events with another value read `default`, events without
    the routing field read `everything`.
    """

    route: str | None
    by_route: Mapping[str, frozenset[str]]
    default: frozenset[str]
    everything: frozenset[str]


class Source:
    """One log format. Subclass it with a `name` and it is registered; autodetection uses `sniff`.

    A source reads a binary stream lazily and yields batches of at most `batch_size` rows with
    string columns for native fields and the reserved `_`-columns of `watchkeeper.events`
    (`_source`, `_file`, `_record` always; core fields where the record holds them). A record it
    cannot read goes to the dead letter with file, record and reason; the rest is still read.
    """

    name: ClassVar[str] = ""
    #: Leading bytes only this format's files start with (a binary magic). A file starting with
    #: them is this source's without asking any `sniff`; empty: autodetection asks `sniff`.
    magic: ClassVar[bytes] = b""
    #: The Sigma logsources this source's events can answer.
    logsources: ClassVar[tuple[LogSourceMapping, ...]] = ()
    registry: ClassVar[dict[str, type[Source]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # Only a class that names itself registers: a subclass inheriting a name (a test's tweaked
        # copy of a source) must not replace the source it derives from.
        if cls.__dict__.get("name"):
            Source.registry[cls.name] = cls

    def __init__(self, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.batch_size = batch_size

    @classmethod
    def sniff(cls, head: bytes, filename: str) -> float:
        """Confidence from 0 to 1 that a file starting with `head` and named `filename` is ours."""
        return 0.0

    def read(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        """Yield batches of the records in `stream`; `origin` names it in errors and `_file`."""
        raise NotImplementedError

    def read_pending(self, stream: BinaryIO, origin: str, dead: DeadLetter) -> Iterator[pa.RecordBatch]:
        """Like `read`, but the rows of a last, partial batch may wait for the next file's; see `flush`.

        Many small files then make a few full batches instead of one tiny batch each. Rows keep
        their own `_file`. The default keeps nothing back.
        """
        return self.read(stream, origin, dead)

    def select(self, selection: FieldSelection) -> None:
        """Read only the selected fields from now on (by default, every field is read).

        A source that selects overrides this and `expand`: it keeps each record's text in
        `events.RAW_COLUMN`, from which `expand` gives back every field of the records a keyword
        search or a detection needs.
        """

    @classmethod
    def expand(cls, raw: Sequence[bytes | str]) -> pa.RecordBatch:
        """The native fields a read without selection gives for these records, one row each."""
        raise NotImplementedError(f"{cls.name} does not select fields")

    def flush(self) -> Iterator[pa.RecordBatch]:
        """The rows `read_pending` kept back, as batches (call once the last file is read)."""
        return iter(())
