"""Let the C allocator keep freed activation memory for the next step instead of returning it to the kernel.

glibc serves every block above its mmap threshold (at most 32 MB when it adapts it) with a fresh mmap and
unmaps it on free. A batch of 16 photos at 416 px has activations of 100-300 MB, so every forward/backward
step mapped, zero-filled (page faults) and unmapped over a gigabyte: on this project's 2-core machine a frozen
EfficientNet-Lite0 step spent 2.4 s in the kernel for 1.4 s of compute (130 ms per image; 31 ms with the
settings below). Raising the mmap threshold keeps that memory in the heap, where the next step reuses it, and
trimming is turned off: with a 1 GiB trim threshold, a batch of 32 (a peak of several GiB) still freed more than
that at the top of the heap after every step, so glibc gave it back and the next step faulted it in again (1.5-2.4
million page faults and 3-14 s of kernel time per 128 photos; 8-13 photos/s, 18 with trimming off). The process's
peak memory is what it was, it is just not handed back between steps. DataLoader workers are forked and inherit
the setting. Elsewhere than glibc (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("train")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap
_NEVER = -1  # M_TRIM_THRESHOLD -1: never trim (mallopt(3))


def keep_freed_memory() -> bool:
    """True when glibc accepted the thresholds."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("allocator: no glibc mallopt here; memory settings unchanged")
        return False
    accepted = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER))
    log.info("allocator: freed blocks up to %d MB kept for reuse, heap never trimmed: %s", _THRESHOLD >> 20, accepted)
    return accepted
