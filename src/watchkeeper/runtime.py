"""Process-wide settings a run of Watchkeeper makes once, before any work: threads and memory."""

from __future__ import annotations

import ctypes
import gc
import os

import pyarrow as pa

#: glibc's `mallopt` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap, not from a mapping of their own that is returned
#: to the system when freed: the readers' batches (16 MiB of records' text, column lists) are
#: freed and allocated again thousands of times.
MMAP_THRESHOLD = 64 << 20
#: Free memory at the top of the heap is kept up to this much instead of being returned at once.
TRIM_THRESHOLD = 256 << 20


def configure_process() -> None:
    """Set what a command needs of the process: one BLAS thread, freed memory kept for reuse.

    Memory returned to the system costs a page fault per 4 KiB when it is touched again — about
    3.5 µs each on the virtual machines measured (docs/performance.md) — and glibc returns freed
    blocks above 128 KiB at once. With glibc keeping them, Arrow's buffers come from it too
    (mimalloc hands freed pages back after a few milliseconds): on a third of OTRF a hunt then
    took 62–66k page faults instead of 70–76k, a third of the system time and 35–40 MB less at
    peak. Library users call this themselves. Settings the user made (`GLIBC_TUNABLES`,
    `ARROW_DEFAULT_MEMORY_POOL`, `OPENBLAS_NUM_THREADS`) win.
    """
    # Set before numpy loads (a command imports it): no command does linear algebra, yet OpenBLAS
    # starts a thread per core at import, ~60 ms of a hunt.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if not _keep_freed_memory():
        return
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        pa.set_memory_pool(pa.system_memory_pool())


def _keep_freed_memory() -> bool:
    """Raise glibc's thresholds for returning memory; False where they are not ours to set."""
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: its own defaults stand
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def settle_heap() -> None:
    """Freeze what lives to the end of this one-shot process, then collect young objects rarely.

    The compiled rules are ~170k objects, unpickled with no collection: frozen before any
    collection, no generation ever traverses them (that was ~0.2 s of a 2 s hunt). Parsing events
    allocates and frees many small containers, so the first generation is collected every 50,000
    allocations instead of 700; cyclic garbage is still collected.
    """
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)
    gc.enable()
