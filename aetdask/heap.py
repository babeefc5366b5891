"""The C heap of a Dask worker, for tasks that allocate many mid-sized arrays (abTEM).

A Dask worker starts with ``MALLOC_TRIM_THRESHOLD_`` set by distributed's nanny, which pins
glibc's mmap threshold at its 128 KiB minimum: every array above it is mapped fresh from
the kernel and unmapped when freed. abTEM allocates a few such arrays per probe position
(a 156² complex64 wave is 195 KiB), so the 4D-STEM simulation ran 1.3× and a ptychographic
reconstruction 2.5–2.9× slower on a worker than in a plain process (BENCHMARKS.md).
:func:`reuse_heap` raises the threshold for the length of a simulation task and sets it back after
(the setting is per process: two threads of one worker only change each other's speed).
"""

from __future__ import annotations

import contextlib
import ctypes
import os

__all__ = ["reuse_heap"]

#: glibc's ``mallopt`` parameter number and its default value (bytes).
M_MMAP_THRESHOLD, MMAP_DEFAULT = -3, 128 * 1024


def _mallopt():
    try:
        return ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


@contextlib.contextmanager
def reuse_heap(threshold: int = 32 << 20):
    """Let the heap reuse freed arrays below ``threshold`` bytes (glibc's largest, 32 MiB,
    by default) inside the block; elsewhere than glibc, nothing changes.

    >>> with reuse_heap():
    ...     total = sum(bytearray(200_000)[0] for _ in range(3))
    >>> total
    0
    """
    mallopt = _mallopt()
    if mallopt is None:
        yield
        return
    mallopt(M_MMAP_THRESHOLD, int(threshold))
    try:
        yield
    finally:
        mallopt(M_MMAP_THRESHOLD, int(os.environ.get("MALLOC_MMAP_THRESHOLD_", MMAP_DEFAULT)))
