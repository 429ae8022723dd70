"""Walking inputs: files, directories and archives (zip, gzip, tar, tar.gz), nested one level deep.

Archives are recognised by their magic bytes, not only their extension, and are streamed: nothing
is extracted whole into memory. A damaged archive or member goes to the dead letter and the walk
goes on; a stream that breaks part-way (truncated gzip, bad CRC) yields what decompressed before
the damage and then records the damage.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from isal import isal_zlib

from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.zipmember import inflatable, open_member

#: How many archive levels are opened: an archive, and archives inside it.
MAX_DEPTH = 2
#: Nested archives need seeking (zip) and are spooled; beyond this size the spool goes to disk.
SPOOL_MEMORY = 16 * 1024 * 1024
_CHUNK = 1024 * 1024

# Exceptions a decompressor raises on damaged input (CRC mismatch, truncated stream, bad header).
_DAMAGE: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    cast(type[Exception], isal_zlib.error),  # its stubs declare an instance
    EOFError,
    tarfile.TarError,
    gzip.BadGzipFile,
    OSError,
)


@dataclass(frozen=True)
class Member:
    """One readable input: a file, or a member of an archive (`a.zip!dir/b.json`)."""

    display: str
    size: int | None
    opener: Callable[[], BinaryIO] = field(repr=False, compare=False)

    def open(self) -> AbstractContextManager[BinaryIO]:
        """Open the member for binary reading (valid until the walk moves to the next member)."""
        return _closing(self.opener())


@contextmanager
def _closing(stream: BinaryIO) -> Iterator[BinaryIO]:
    try:
        yield stream
    finally:
        stream.close()


class _Guarded(io.RawIOBase):
    """A decompressing stream whose damage ends it (EOF) and is recorded, instead of raising."""

    def __init__(self, inner: BinaryIO, display: str, dead: DeadLetter) -> None:
        super().__init__()
        self._inner = inner
        self._display = display
        self._dead = dead
        self._broken = False
        self._read: Callable[[int], bytes] = getattr(inner, "read1", inner.read)
        # A raw stream (our gunzip) decodes straight into the caller's buffer: no copy between.
        self._readinto = inner.readinto if isinstance(inner, io.RawIOBase) else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._broken:
            return 0
        try:
            if self._readinto is not None:
                return self._readinto(buffer) or 0
            # read1: one underlying read, so bytes decoded before damage are not lost with it.
            data = self._read(len(buffer))
        except _DAMAGE as exc:
            self._broken = True
            self._dead.add(self._display, None, f"archive data damaged, stopped reading here: {exc}")
            return 0
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        # Closing a damaged member may re-check its CRC; the damage is already recorded.
        with contextlib.suppress(*_DAMAGE):
            self._inner.close()
        super().close()


class _Gunzip(io.RawIOBase):
    """gzip decompression that hands out every byte decoded before a truncation or corruption.

    `gzip.GzipFile.read` raises on a truncated stream and drops what it decoded in that call;
    feeding a decompressor chunk by chunk keeps it. Concatenated gzip members are read in turn.
    """

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._z = _inflater()
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._done:
            if self._z.eof:
                # Past a member's end: another member of a concatenated file, padding, or the end.
                rest = self._z.unused_data or self._raw.read(_CHUNK // 4)
                if not rest.strip(b"\x00"):
                    if not rest:
                        self._done = True
                    self._z = _finished()
                    continue
                self._z = _inflater()
                data = rest
            else:
                data = self._z.unconsumed_tail or self._raw.read(_CHUNK // 4)
                if not data:
                    self._done = True
                    raise EOFError("gzip stream ends before its end-of-stream marker (truncated)")
            self._pending = self._z.decompress(data, len(buffer))
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _inflater() -> Any:
    """A gzip decompressor: ISA-L's, about three times faster than zlib's, with the same interface."""
    return isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)


def _finished() -> Any:
    """A decompressor already at its end with nothing left over (the state after padding)."""
    z = _inflater()
    z.decompress(_EMPTY_GZIP)
    return z


_EMPTY_GZIP = gzip.compress(b"")


def gunzip(raw: BinaryIO) -> BinaryIO:
    """A decompressing reader over a gzip stream (raises EOFError / isal_zlib.error on damage)."""
    return io.BufferedReader(_Gunzip(raw), buffer_size=_CHUNK)  # type: ignore[return-value]


def guarded(inner: BinaryIO, display: str, dead: DeadLetter) -> BinaryIO:
    """Wrap a decompressing stream so damage becomes a dead-letter entry and an early EOF."""
    return io.BufferedReader(_Guarded(inner, display, dead), buffer_size=_CHUNK)  # type: ignore[return-value]


class _Prefixed(io.RawIOBase):
    """`head` followed by the rest of `tail`: puts back bytes already read for sniffing."""

    def __init__(self, head: bytes, tail: BinaryIO) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._tail.readinto(buffer)  # type: ignore[attr-defined]

    def close(self) -> None:
        self._tail.close()
        super().close()


class _Unclosed(io.RawIOBase):
    """A view of a stream whose close leaves the stream open (the archive owns it)."""

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__()
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _unclosed(inner: BinaryIO) -> BinaryIO:
    return _Unclosed(inner)  # type: ignore[return-value]


def peek_head(stream: BinaryIO, size: int) -> bytes | None:
    """The first `size` bytes of a buffered stream, left unread, or None if its buffer holds fewer.

    Peeking spares the layer `with_head` adds to put bytes back, which copies every byte read.
    """
    peek = getattr(stream, "peek", None)
    if peek is None:
        return None
    data = peek(size)
    return data[:size] if len(data) >= size else None


def with_head(head: bytes, stream: BinaryIO) -> BinaryIO:
    """A stream reading `head` again, then the rest of `stream` (rewinds when it can seek)."""
    if stream.seekable():
        stream.seek(0)
        return stream
    return io.BufferedReader(_Prefixed(head, stream), buffer_size=_CHUNK)  # type: ignore[return-value]


def spool(stream: BinaryIO) -> BinaryIO:
    """Copy a stream into a seekable temporary file (in memory while small)."""
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 - handed to the caller
    shutil.copyfileobj(stream, out, _CHUNK)
    out.seek(0)
    return out  # type: ignore[return-value]


def _kind(head: bytes) -> str | None:
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def _read_head(stream: BinaryIO, n: int) -> bytes:
    chunks = []
    while n > 0:
        data = stream.read(n)
        if not data:
            break
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


def iter_members(paths: Iterable[str | os.PathLike[str]], dead: DeadLetter) -> Iterator[Member]:
    """Every readable input under `paths`: directories walked in sorted order, archives opened."""
    for raw in paths:
        path = Path(raw)
        files = input_files(path)
        if files is None:
            dead.add(str(path), None, "no such file or directory")
            continue
        for file in files:
            yield from _from_file(file, dead)


def input_files(path: Path) -> list[Path] | None:
    """The files `path` stands for, in reading order: itself, or a folder's, sorted; None if absent."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.is_file():
        return [path]
    return None


def _from_file(path: Path, dead: DeadLetter) -> Iterator[Member]:
    display = str(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = _read_head(fh, 512)
    except OSError as exc:
        dead.add(display, None, f"cannot read file: {exc.strerror or exc}")
        return
    kind = _kind(head)
    if kind is None:
        yield Member(display, size, lambda: path.open("rb"))
        return
    try:
        with path.open("rb") as fh:
            yield from _archive(kind, fh, display, dead, 1)
    except OSError as exc:
        dead.add(display, None, f"cannot read file: {exc.strerror or exc}")


def _archive(kind: str, fh: BinaryIO, display: str, dead: DeadLetter, depth: int) -> Iterator[Member]:
    """The members of one archive; archives inside it are opened while depth allows."""
    try:
        if kind == "zip":
            yield from _zip(fh, display, dead, depth)
        elif kind == "gzip":
            yield from _gzip(fh, display, dead, depth)
        else:
            yield from _tar(fh, "r|", display, dead, depth)
    except _DAMAGE as exc:
        dead.add(display, None, f"damaged {kind} archive: {exc}")


def _nested_or_plain(
    display: str, size: int | None, open_raw: Callable[[], BinaryIO], dead: DeadLetter, depth: int
) -> Iterator[Member]:
    """A member that may itself be an archive: opened when depth allows, else yielded as is."""
    recorded = dead.by_file[display]
    stream = guarded(open_raw(), display, dead)
    head = peek_head(stream, 512)
    whole = stream
    if head is None:
        head = _read_head(stream, 512)
        whole = with_head(head, stream)
    if not head and dead.by_file[display] > recorded:
        stream.close()
        return  # damaged from its first byte: recorded once, nothing left to read
    kind = _kind(head)
    if kind is not None and depth < MAX_DEPTH:
        with stream, spool(whole) as spooled:
            yield from _archive(kind, spooled, display, dead, depth + 1)
        return
    # The probe stream, put back together, serves the first open (a streaming tar cannot reopen).
    pending = [whole]

    def reopen() -> BinaryIO:
        return pending.pop() if pending else guarded(open_raw(), display, dead)

    try:
        yield Member(display, size, reopen)
    finally:
        for unused in pending:
            unused.close()


def _zip(fh: BinaryIO, display: str, dead: DeadLetter, depth: int) -> Iterator[Member]:
    with zipfile.ZipFile(fh) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if info.is_dir():
                continue
            inner = f"{display}!{info.filename}"

            def open_raw(info: zipfile.ZipInfo = info) -> BinaryIO:
                if inflatable(info):
                    return open_member(fh, info)
                return archive.open(info)  # type: ignore[return-value]

            try:
                yield from _nested_or_plain(inner, info.file_size, open_raw, dead, depth)
            except _DAMAGE as exc:
                dead.add(inner, None, f"damaged zip member: {exc}")


def _gzip(fh: BinaryIO, display: str, dead: DeadLetter, depth: int) -> Iterator[Member]:
    head = _read_head(guarded(gunzip(_unclosed(fh)), display, dead), 512)
    fh.seek(0)
    if _kind(head) == "tar":
        yield from _tar(fh, "r|gz", display, dead, depth)
        return
    name = display.rsplit("!", 1)[-1]
    stem = Path(name).name
    stem = stem[:-3] if stem.lower().endswith(".gz") else stem
    start = fh.tell()

    def open_raw() -> BinaryIO:
        fh.seek(start)
        # Raw: `guarded` buffers it once; a second buffer would copy every byte again.
        return _Gunzip(_unclosed(fh))  # type: ignore[return-value]

    yield from _nested_or_plain(f"{display}!{stem}", None, open_raw, dead, depth)


def _tar(fh: BinaryIO, mode: str, display: str, dead: DeadLetter, depth: int) -> Iterator[Member]:
    # Streaming mode: a member is readable only until the next one is requested.
    with tarfile.open(fileobj=fh, mode=mode) as archive:  # type: ignore[call-overload]
        for info in archive:
            if not info.isfile():
                continue
            inner = f"{display}!{info.name}"

            def open_raw(info: tarfile.TarInfo = info) -> BinaryIO:
                stream = archive.extractfile(info)
                if stream is None:
                    return io.BytesIO()  # type: ignore[return-value]
                return stream  # type: ignore[return-value]

            try:
                yield from _nested_or_plain(inner, info.size, open_raw, dead, depth)
            except _DAMAGE as exc:
                dead.add(inner, None, f"damaged tar member: {exc}")
