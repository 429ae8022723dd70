"""Worker processes over shares of the input files: what `hunt --jobs` and `ingest --jobs` share.

Workers are started with "spawn": forking a process that already runs pyarrow's threads is
unsafe. Each is called as `target(index, *args, outbox)` and puts its messages on `outbox`;
it ends with `("done", index, result)` or `("error", index, text)`. The parent hands every other
message to its own handler, and raises a `WorkerError` when a worker fails or dies without a word.
"""

from __future__ import annotations

import ctypes
import heapq
import multiprocessing
import os
import queue
import shutil
import signal
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from watchkeeper.errors import WatchkeeperError, WorkerError
from watchkeeper.sources.inputs import input_files

#: How long the parent waits for a message before it looks whether its workers are still alive.
POLL_SECONDS = 0.5
#: prctl(2): the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


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


def run_workers(
    target: Callable[..., None],
    args: Sequence[tuple[Any, ...]],
    what: str,
    handle: Callable[[tuple[Any, ...]], None],
    maxsize: int = 0,
) -> list[Any]:
    """Run `target` once per item of `args` in a process of its own; the results of their "done".

    `handle` is given every other message, in the order they arrive. `maxsize` bounds the queue
    (0: unbounded): a worker then waits while the parent is behind. `what` names the workers in
    errors. On any error, and on Ctrl-C, every worker is ended before this returns.
    """
    context = multiprocessing.get_context("spawn")
    outbox = context.Queue(maxsize)
    processes = [
        context.Process(target=target, name=f"watchkeeper-{what}-{i + 1}", daemon=True, args=(i, *a, outbox))
        for i, a in enumerate(args)
    ]
    try:
        for process in processes:
            process.start()
        return _collect(processes, outbox, what, handle)
    finally:
        # Also on Ctrl-C and on any error: no worker outlives the run.
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
        outbox.close()


def _collect(
    processes: Sequence[BaseProcess], outbox: Any, what: str, handle: Callable[[tuple[Any, ...]], None]
) -> list[Any]:
    """Relay the workers' messages until each has sent its result; a worker's failure is raised."""
    results: dict[int, Any] = {}
    lost_before: set[int] = set()
    while len(results) < len(processes):
        try:
            message = outbox.get(timeout=POLL_SECONDS)
        except queue.Empty:
            lost = {i for i, p in enumerate(processes) if i not in results and not p.is_alive()}
            # A worker that has exited has put all it sent in the pipe: after a whole poll with
            # nothing more arriving, its result is not coming.
            for i in sorted(lost & lost_before):
                code = processes[i].exitcode
                how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with {code}"
                raise WorkerError(f"{what} worker {i + 1} of {len(processes)} {how} before it finished",
                                  hint="out of memory? try fewer --jobs") from None
            lost_before = lost
            continue
        kind = message[0]
        if kind == "done":
            results[message[1]] = message[2]
        elif kind == "error":
            raise WorkerError(f"{what} worker {message[1] + 1} of {len(processes)} failed: {message[2]}")
        else:
            handle(message)
    return [results[i] for i in range(len(processes))]


def start_worker() -> None:
    """What every worker does first: leave Ctrl-C to the parent, end with it."""
    # Ctrl-C reaches every process of the terminal: the parent alone handles it, ending the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with_parent()


def end_with_parent() -> None:
    """Have the kernel end this worker when the parent dies, even by SIGKILL (Linux; elsewhere no-op).

    Otherwise an orphaned worker would work on to its end with nobody reading its results.
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


def join_into(parts: list[Path], target: Path, append: bool = False) -> None:
    """The workers' dead letters, in worker order, into `target`: replacing it, or after what it
    holds with `append` (as one process does), and only when there is an entry."""
    present = [p for p in parts if p.exists() and p.stat().st_size]
    if not present:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("ab" if append else "wb") as out:
        for part in present:
            with part.open("rb") as fh:
                shutil.copyfileobj(fh, out)
