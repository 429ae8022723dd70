"""Autodetection: which registered source reads a file, and reading many inputs through it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from typing import BinaryIO

import pyarrow as pa

from watchkeeper.sources import load_all
from watchkeeper.sources.base import DEFAULT_BATCH_SIZE, FieldSelection, Source
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.inputs import Member, iter_members, peek_head, with_head

#: Bytes of a file every source's `sniff` sees.
HEAD_SIZE = 64 * 1024
#: Below this confidence a source's claim is not taken.
MIN_CONFIDENCE = 0.1


def detect(head: bytes, filename: str) -> type[Source] | None:
    """The source whose magic `head` starts with, else the most confident (ties: by name), or None."""
    ordered = _sorted(tuple(load_all().items()))
    for _, source in ordered:
        # A magic is a claim no sniffer needs to confirm: the ~50 text sniffers would each split
        # 64 KiB of binary into lines to say no (0.1 s over a folder of EVTX files).
        if source.magic and head.startswith(source.magic):
            return source
    best: tuple[float, str] | None = None
    chosen: type[Source] | None = None
    for name, source in ordered:
        confidence = source.sniff(head, filename)
        # Sorted by name and strictly greater: the alphabetically first wins a tie, every run.
        if confidence >= MIN_CONFIDENCE and (best is None or confidence > best[0]):
            best, chosen = (confidence, name), source
            if confidence >= 1.0:
                break  # certainty cannot be beaten, only tied by a later name, which loses
    return chosen


def _select(source: Source, select: Callable[[str], FieldSelection | None]) -> None:
    if type(source).select is Source.select:
        return  # it reads every field: the selection is not worth working out
    selection = select(source.name)
    if selection is not None:
        source.select(selection)


@cache
def _sorted(registered: tuple[tuple[str, type[Source]], ...]) -> list[tuple[str, type[Source]]]:
    # Sorted once per registry content: a source registered later (a user's plug-in) is still seen.
    return sorted(registered, key=lambda item: item[0])


def _read_head(stream: BinaryIO, size: int) -> bytes:
    read = stream.read
    chunks: list[bytes] = []
    while size > 0:
        data = read(size)
        if not data:
            break
        chunks.append(data)
        size -= len(data)
    return b"".join(chunks)


def read_inputs(
    paths: Iterable[str | os.PathLike[str]],
    dead: DeadLetter,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_member: Callable[[Member, str | None], None] | None = None,
    source: Source | None = None,
    select: Callable[[str], FieldSelection | None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Batches of every input under `paths`, each read by the source that recognises it.

    With `source`, every input is read by that source instead (one the user configured, such as
    a mapped CSV, which autodetection never picks). Consecutive inputs of one source share its
    batches (`Source.read_pending`): a folder of small EVTX files makes a few full batches.
    With `select`, a source that can leave fields unread is told which ones are read (by name).
    """
    if source is not None and select is not None:
        _select(source, select)
    current: Source | None = None  # the source of the previous input, which may hold rows back
    for member in iter_members(paths, dead):
        recorded = dead.by_file[member.display]
        with member.open() as opened:
            head = peek_head(opened, HEAD_SIZE)
            if head is not None:
                stream = opened
            else:
                head = _read_head(opened, HEAD_SIZE)
                stream = with_head(head, opened)
            if not head:
                if on_member is not None:
                    on_member(member, None)
                if dead.by_file[member.display] == recorded:  # else: damaged, already recorded
                    dead.add(member.display, None, "empty file")
                continue
            if source is not None:
                if on_member is not None:
                    on_member(member, source.name)
                yield from source.read(stream, member.display, dead)
                continue
            found = detect(head, member.display)
            if on_member is not None:
                on_member(member, found.name if found is not None else None)
            if found is None:
                dead.add(member.display, None, f"format not recognised (first bytes: {head[:32]!r})")
                continue
            if type(current) is not found:
                if current is not None:
                    yield from current.flush()
                current = found(batch_size)
                if select is not None:
                    _select(current, select)
            yield from current.read_pending(stream, member.display, dead)
    if current is not None:
        yield from current.flush()
