"""How training's process holds freed memory: glibc's malloc, tuned for a loop of equal steps.

glibc serves a request above its mmap threshold (at most 32 MiB) with a fresh mapping, unmaps it on
free, and trims the heap's free top. A training step allocates and frees the same large
activations every time, so each step the kernel hands out, zeroes and faults in those pages again:
on the 2-core build machine a stage-1 run spent about a quarter of its CPU time in the kernel, at
about 190,000 page faults a second. `keep_freed_memory` turns mappings off and puts trimming out of
reach, so a freed buffer stays in the heap for the next step; the process then holds its working
set until it ends, and `release_freed_memory` still hands free pages back where a loop of many
sizes would otherwise grow the heap (stages 2 and 3 every 10 steps). `bench_train --heap` measures
the two side by side.

Only glibc has mallopt and malloc_trim; elsewhere (musl, macOS) these change nothing, and `train` says so.
"""

from __future__ import annotations

import ctypes

# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

KEPT = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}
# glibc's own values once its dynamic threshold has grown to the maximum: the most that a
# long-running default process keeps (mmap threshold 32 MiB on 64-bit, trim threshold twice that).
GLIBC_WARMED_UP = {M_MMAP_MAX: 65536, M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20}


def _glibc():
    """The C library already loaded, where it is glibc: the one with both calls (no library search,
    no scan of the interpreter's binary as platform.libc_ver would do at import)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


LIBC = _glibc()


def _mallopt(settings: dict[int, int]) -> bool:
    # mallopt returns 1 on success, 0 for a value it refuses
    return LIBC is not None and all(LIBC.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1
                                    for param, value in settings.items())


def keep_freed_memory() -> bool:
    """Stop malloc from returning freed memory to the system; False where it cannot (not glibc)."""
    return _mallopt(KEPT)


def map_as_glibc_does() -> bool:
    """glibc's default once warmed up: large buffers mapped and unmapped, the heap's top trimmed."""
    return _mallopt(GLIBC_WARMED_UP)


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system. Each clip's tower pass frees activations
    of many sizes, and glibc keeps them in its heaps: run 18's tower features (5,618 clips) grew
    the process by 9 GB this way and it was killed at 24 GB; trimming every 20 clips keeps it
    flat at no measurable cost (scratch test, the compiled tower on 318 clips three times over:
    +0.06 GB over the second and third passes against +0.77 GB untrimmed, the same time; run 18's
    resumed stage 2 stayed at 15 GB)."""
    if LIBC is not None:
        LIBC.malloc_trim(0)
