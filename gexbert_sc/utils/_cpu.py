"""What the CPU at hand can do: its instruction-set flags, read once from ``/proc/cpuinfo``."""

from __future__ import annotations

import functools


@functools.cache
def cpu_flags() -> frozenset[str]:
    """Return the CPU's instruction-set flags (``/proc/cpuinfo``; empty where it cannot be read).

    Returns
    -------
    The flags of the first processor listed, e.g. ``{"avx2", "avx512_bf16", ...}``.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_amx() -> bool:
    """Whether the CPU has AMX tile instructions for bf16 (Intel Sapphire Rapids and later).

    Returns
    -------
    ``True`` if ``amx_bf16`` is among :func:`cpu_flags`.
    """
    return "amx_bf16" in cpu_flags()
