"""`keep_freed_memory`: glibc's malloc keeps freed memory for reuse instead of handing it back to the kernel.

A CPU planning step of a large model allocates and frees the same large temporaries over and
over: TD-MPC2 at its default size plans on 2048 rows x 512 features, 4 MB a temporary, hundreds
a step. glibc serves such sizes from its heap once it has seen one freed (its dynamic mmap
threshold), but returns the heap's free top to the kernel whenever it exceeds twice that
threshold, and the next step faults fresh pages in, each zero-filled by the kernel on first
touch. With the thresholds below the memory stays with the process: on a 2-core AMD EPYC, with
glibc's variables set for the whole process, a TD-MPC2 planning step ran 1.21x faster (median
paired ratio, `benchmarks/paired.py`), a CEM plan call 1.06x, a PETS-size one 1.03x; set here at
the first plan, 1.05x on TD-MPC2 planning in a fast phase of that machine. The cost is memory: up
to `TRIM_THRESHOLD` of freed memory stays with the process (plus the heap's growth steps, `TOP_PAD`).

The planners set it at their first CPU plan (`SamplingPlanner`); a process can set it earlier
by calling `keep_freed_memory` itself, or keep glibc's defaults with the environment variable
``TORCHRL_LAYERED_KEEP_FREED_MEMORY=0``. Malloc settings of the user's own (``MALLOC_*_``
variables, ``glibc.malloc`` tunables) are left as they are, and C libraries other than glibc
are not touched.
"""
from __future__ import annotations

import ctypes
import os

#: glibc's ``mallopt`` parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: Allocations up to this size come from the heap (TD-MPC2's and the ensembles' temporaries are 1-50 MB).
MMAP_THRESHOLD = 64 << 20
#: Free memory at the heap's top is handed back to the kernel only beyond this.
TRIM_THRESHOLD = 128 << 20
#: The heap grows (and keeps) this much beyond each request.
TOP_PAD = 64 << 20
#: Set to ``0`` to keep glibc's defaults.
OPT_OUT_VARIABLE = "TORCHRL_LAYERED_KEEP_FREED_MEMORY"
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

#: Whether the thresholds are set; None until `keep_freed_memory` first runs.
_KEPT: bool | None = None


def _glibc():
    """This process's C library where it is glibc, else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError, TypeError):  # TypeError: a platform without a process handle
        return None


def _user_decides() -> bool:
    """Whether malloc settings are the user's: the opt-out, glibc's variables or its malloc tunables."""
    return (os.environ.get(OPT_OUT_VARIABLE, "1").strip() == "0" or any(name in os.environ for name in _USER_SETTINGS)
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""))


def keep_freed_memory() -> bool:
    """Raises glibc's mmap and trim thresholds and its top pad for this process, once (a few
    microseconds after that); True where they are set, False where nothing was (see above)."""
    global _KEPT
    if _KEPT is None:
        libc = None if _user_decides() else _glibc()
        _KEPT = libc is not None and all(
            libc.mallopt(param, value) == 1
            for param, value in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                                 (_M_TOP_PAD, TOP_PAD)))
    return _KEPT
