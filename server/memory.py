"""Giving freed C heap memory back to the system."""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_malloc_trim = _load_malloc_trim()


def release_memory() -> None:
    """Return the C heap's free memory to the system (a few ms; off the event loop): glibc
    keeps what a thread freed in its arena otherwise."""
    if _malloc_trim is not None:
        _malloc_trim(0)
