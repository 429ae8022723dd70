"""`hunt --jobs N`: the input files split across worker processes, their results merged.

Each worker runs `run_hunt` over its share of the files in a process of its own, started with
"spawn": forking a process that already runs pyarrow's threads is unsafe. Workers stream their
detections, files and warnings back in chunks; the parent feeds its sink and counts them as one
process would, so the summary is the same whatever the number of workers. Only the order of the
detections differs: each worker's come in its file order, the workers' interleaved.
"""

from __future__ import annotations

import ctypes
import gc
import heapq
import multiprocessing
import os
import queue
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from watchkeeper.errors import WatchkeeperError, WorkerError
from watchkeeper.hunt import HuntOptions, HuntStats, Sink, _count, prepare_rules, run_hunt
from watchkeeper.runtime import configure_process, settle_heap
from watchkeeper.sources.inputs import input_files

#: Detections and notices a worker sends per message: a message each would cost more than the detecting.
CHUNK = 500
#: How long the parent waits for a message before it looks whether its workers are still alive.
POLL_SECONDS = 0.5
#: prctl(2): the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1

Worker = Callable[[int, HuntOptions, Any], None]


@dataclass(frozen=True)
class Unit:
    """One input file (an archive is one, whole) and its size in bytes: what a worker is given."""

    path: Path
    size: int


def cpu_count() -> int:
    """The CPUs this process may use (`os.process_cpu_count` where Python has it), at least 1."""
    count: Callable[[], int | None] = getattr(os, "process_cpu_count", os.cpu_count)
    return count() or 1


def units_of(paths: Sequence[Path]) -> list[Unit]:
    """Every input file under `paths`, in the order one process reads them.

    An absent path stays a unit of its own: its worker records it in the dead letter, as one
    process would.
    """
    units: list[Unit] = []
    for path in paths:
        files = input_files(path)
        for file in files if files is not None else [path]:
            try:
                size = file.stat().st_size
            except OSError:
                size = 0
            units.append(Unit(file, size))
    return units


def assign(units: Sequence[Unit], workers: int) -> list[list[Unit]]:
    """`units` in at most `workers` shares of about equal bytes: largest first, to the least loaded.

    No share is empty, and each keeps the reading order of its units.
    """
    count = max(1, min(workers, len(units)))
    loads = [(0, 0, i) for i in range(count)]  # bytes, then units (empty files weigh too), worker
    shares: list[list[int]] = [[] for _ in range(count)]
    for i in sorted(range(len(units)), key=lambda i: (-units[i].size, i)):
        size, many, worker = heapq.heappop(loads)
        shares[worker].append(i)
        heapq.heappush(loads, (size + units[i].size, many + 1, worker))
    return [[units[i] for i in sorted(share)] for share in shares if share] or [[]]


def run_hunt_parallel(
    options: HuntOptions,
    jobs: int,
    sink: Sink,
    on_member: Callable[[Any, str | None], None] | None = None,
    announce: Callable[[str], None] | None = None,
    on_ready: Callable[[], None] | None = None,
    worker: Worker | None = None,
) -> HuntStats:
    """Hunt as `run_hunt` does, the input files split across up to `jobs` processes (0: one per CPU).

    `on_member` is given each file's display name. `worker` replaces the worker's function
    (tests); it must be importable by name, as "spawn" requires.
    """
    shares = assign(units_of(options.paths), jobs or cpu_count())
    if len(shares) == 1:
        return run_hunt(options, sink, on_member=on_member, announce=announce, on_ready=on_ready)
    started = time.perf_counter()
    stats = HuntStats()
    # Loaded here first, for the summary and so that every worker finds the compiled rules cached.
    prepare_rules(options, stats)
    if on_ready is not None:
        on_ready()
    with tempfile.TemporaryDirectory(prefix="watchkeeper-hunt-") as tmp:
        letters = [Path(tmp) / f"deadletter-{i}.jsonl" for i in range(len(shares))]
        context = multiprocessing.get_context("spawn")
        outbox = context.Queue()
        processes = [
            context.Process(
                target=worker or _work, name=f"watchkeeper-hunt-{i + 1}", daemon=True,
                args=(i, replace(options, paths=[u.path for u in share],
                                 dead_letter=letters[i] if options.dead_letter is not None else None), outbox),
            )
            for i, share in enumerate(shares)
        ]
        try:
            for process in processes:
                process.start()
            results = _collect(processes, outbox, stats, sink, on_member, announce)
        finally:
            # Also on Ctrl-C and on any error: no worker outlives the hunt.
            for process in processes:
                if process.is_alive():
                    process.terminate()
            for process in processes:
                process.join()
            outbox.close()
        for result in results:
            stats.events += result.events
            stats.members += result.members
            stats.dead_letters += result.dead_letters
            stats.repaired += result.repaired
            stats.by_source.update(result.by_source)
        if options.dead_letter is not None:
            _join_into(letters, options.dead_letter)
    stats.seconds = time.perf_counter() - started
    return stats


def _collect(
    processes: Sequence[BaseProcess],
    outbox: Any,
    stats: HuntStats,
    sink: Sink,
    on_member: Callable[[Any, str | None], None] | None,
    announce: Callable[[str], None] | None,
) -> list[HuntStats]:
    """Relay the workers' messages until each has sent its counts; a worker's failure is raised."""
    results: dict[int, HuntStats] = {}
    lost_before: set[int] = set()
    while len(results) < len(processes):
        try:
            message = outbox.get(timeout=POLL_SECONDS)
        except queue.Empty:
            lost = {i for i, p in enumerate(processes) if i not in results and not p.is_alive()}
            # A worker that has exited has put all it sent in the pipe: after a whole poll with
            # nothing more arriving, its counts are not coming.
            for i in sorted(lost & lost_before):
                code = processes[i].exitcode
                how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with {code}"
                raise WorkerError(f"hunt worker {i + 1} of {len(processes)} {how} before it finished",
                                  hint="out of memory? try fewer --jobs") from None
            lost_before = lost
            continue
        kind = message[0]
        if kind == "items":
            for item in message[1]:
                if item[0] == "d":
                    _count(stats, item[1])
                    sink(item[1])
                elif item[0] == "m":
                    if on_member is not None:
                        on_member(item[1], item[2])
                elif announce is not None:
                    announce(item[1])
        elif kind == "done":
            results[message[1]] = message[2]
        else:
            raise WorkerError(f"hunt worker {message[1] + 1} of {len(processes)} failed: {message[2]}")
    return [results[i] for i in range(len(processes))]


def _work(index: int, options: HuntOptions, outbox: Any) -> None:
    """One worker: hunt its share of the files, sending what it finds to the parent in chunks."""
    # Ctrl-C reaches every process of the terminal: the parent alone handles it, ending the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent()
    configure_process()
    gc.disable()  # as the command does: no collection while the rules load (see `settle_heap`)
    pending: list[tuple[Any, ...]] = []

    def send() -> None:
        if pending:
            outbox.put(("items", pending[:]))
            pending.clear()

    def sink(det: Any) -> None:
        pending.append(("d", det))
        if len(pending) >= CHUNK:
            send()

    def on_member(member: Any, source: str | None) -> None:
        pending.append(("m", member.display, source))
        send()  # the progress line follows the files as they are read

    def announce(line: str) -> None:
        pending.append(("a", line))
        if len(pending) >= CHUNK:
            send()

    try:
        stats = run_hunt(options, sink, on_member=on_member, announce=announce, on_ready=settle_heap)
        send()
    except Exception as exc:  # every failure goes to the parent, which raises it as one error
        outbox.put(("error", index, describe(exc)))
        return
    outbox.put(("done", index, HuntStats(events=stats.events, members=stats.members, dead_letters=stats.dead_letters,
                                         repaired=stats.repaired, by_source=stats.by_source)))


def _end_with_parent() -> None:
    """Have the kernel end this worker when the parent dies, even by SIGKILL (Linux; elsewhere no-op).

    Otherwise an orphaned worker would hunt on to its end with nobody reading its results.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before the request took effect
        os._exit(1)


def describe(exc: BaseException) -> str:
    """One line for an error of a worker: ours as they read, others with their type and place."""
    if isinstance(exc, WatchkeeperError):
        return str(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _join_into(parts: list[Path], target: Path) -> None:
    """The workers' dead letters, in worker order, as `target` (replaced, as one process does, and
    only when there is an entry)."""
    present = [p for p in parts if p.exists() and p.stat().st_size]
    if not present:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        for part in present:
            with part.open("rb") as fh:
                shutil.copyfileobj(fh, out)
