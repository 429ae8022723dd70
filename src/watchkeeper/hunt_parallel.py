"""`hunt --jobs N`: the input files split across worker processes, their results merged.

Each worker runs `run_hunt` over its share of the files in a process of its own (see
`watchkeeper.workers`). Workers stream their detections, files and warnings back in chunks; the
parent feeds its sink and counts them as one process would, so the summary is the same whatever
the number of workers. Only the order of the detections differs: each worker's come in its file
order, the workers' interleaved.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from watchkeeper.hunt import HuntOptions, HuntStats, Sink, count_detection, prepare_rules, run_hunt
from watchkeeper.runtime import configure_process, settle_heap
from watchkeeper.workers import assign, cpu_count, describe, join_into, run_workers, start_worker, units_of

#: Detections and notices a worker sends per message: a message each would cost more than the detecting.
CHUNK = 500

Worker = Callable[[int, HuntOptions, Any], None]


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
        args = [(replace(options, paths=[u.path for u in share],
                         dead_letter=letters[i] if options.dead_letter is not None else None),)
                for i, share in enumerate(shares)]

        def handle(message: tuple[Any, ...]) -> None:
            for item in message[1]:
                if item[0] == "d":
                    count_detection(stats, item[1])
                    sink(item[1])
                elif item[0] == "m":
                    if on_member is not None:
                        on_member(item[1], item[2])
                elif announce is not None:
                    announce(item[1])

        results: list[HuntStats] = run_workers(worker or _work, args, "hunt", handle)
        for result in results:
            stats.events += result.events
            stats.members += result.members
            stats.dead_letters += result.dead_letters
            stats.repaired += result.repaired
            stats.by_source.update(result.by_source)
        if options.dead_letter is not None:
            join_into(letters, options.dead_letter)
    stats.seconds = time.perf_counter() - started
    return stats


def _work(index: int, options: HuntOptions, outbox: Any) -> None:
    """One worker: hunt its share of the files, sending what it finds to the parent in chunks."""
    start_worker()
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
