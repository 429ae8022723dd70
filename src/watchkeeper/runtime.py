"""Process-wide settings a run of Watchkeeper makes once, before any work: threads and memory."""

from __future__ import annotations

import ctypes
import os

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
    blocks above 128 KiB at once. Keeping them cut a hunt's system time by a third and its
    page faults by 40%. Settings the user made (`GLIBC_TUNABLES`, `OPENBLAS_NUM_THREADS`) win.
    """
    # Set before numpy loads (a command imports it): no command does linear algebra, yet OpenBLAS
    # starts a thread per core at import, ~60 ms of a hunt.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: its own defaults stand
        return
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
