"""Byte counts as people read them: the one formatter for the CLI, memory-fit messages and the app."""

from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB")


def human_bytes(count: int | float) -> str:
    """``0 bytes``, ``512 bytes``, ``12 KiB``, ``1.6 MiB``, ``214.5 GiB``: binary multiples, always with a unit,
    and three significant figures at most so a 1.6 MB model never reads "0.0 GiB"."""
    value = float(count)
    if abs(value) < 1024:
        return f"{int(value)} bytes" if value != 1 else "1 byte"
    for unit in _UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if abs(value) >= 100 else f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def human_rate(bytes_per_second: float) -> str:
    """``1.6 MiB/s``: a transfer rate in the units of ``human_bytes``."""
    return f"{human_bytes(bytes_per_second)}/s"
