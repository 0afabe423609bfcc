"""Mac-only behaviour behind one small module: Metal, the GPU wired-memory limit, sysctl.

Every function is safe to call on Linux (CI and dev machines): it answers False/None instead of
failing. MLX is imported lazily, so importing this module never loads MLX.
"""

from __future__ import annotations

import logging
import platform as _stdlib_platform
import subprocess
import sys
from typing import Any

log = logging.getLogger(__name__)


def is_macos() -> bool:
    return sys.platform == "darwin"


def is_apple_silicon() -> bool:
    """True on an arm64 Mac (MLX's Metal backend needs Apple silicon)."""
    return is_macos() and _stdlib_platform.machine() == "arm64"


def metal_available() -> bool:
    """True when MLX is importable and its Metal backend can run here."""
    try:
        import mlx.core as mx

        return bool(mx.metal.is_available())
    except Exception:  # ImportError, or an MLX build without the metal module
        return False


def cpu_backend() -> bool:
    """True when MLX computes on its CPU backend (no Metal): the runtime then casts bfloat16/float16
    weights to float32 at load, so activations and caches are float32 too."""
    import mlx.core as mx

    return mx.default_device() == mx.cpu


def metal_device_info() -> dict[str, Any]:
    """MLX's device info (``memory_size``, ``max_recommended_working_set_size``); {} off Metal."""
    if not metal_available():
        return {}
    try:
        import mlx.core as mx

        # mx.device_info replaced mx.metal.device_info (deprecated) in recent MLX releases.
        info = mx.device_info() if hasattr(mx, "device_info") else mx.metal.device_info()
        return dict(info)
    except Exception:
        log.debug("could not read the Metal device info", exc_info=True)
        return {}


def recommended_working_set_bytes() -> int | None:
    """How much memory Metal lets the GPU keep resident, or None when Metal is not available."""
    value = metal_device_info().get("max_recommended_working_set_size")
    return int(value) if value else None


def sysctl_int(name: str) -> int | None:
    """An integer sysctl value on macOS (``iogpu.wired_limit_mb``); None elsewhere or on failure."""
    if not is_macos():
        return None
    try:
        out = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=2.0, check=True
        ).stdout.strip()
        return int(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def iogpu_wired_limit_bytes() -> int | None:
    """The limit set by ``sudo sysctl iogpu.wired_limit_mb=N``; None when unset (0) or not a Mac."""
    mb = sysctl_int("iogpu.wired_limit_mb")
    return mb * 1024 * 1024 if mb else None


def set_wired_limit(limit_bytes: int) -> int | None:
    """Ask MLX to keep up to ``limit_bytes`` of memory wired (resident) for the GPU.

    Returns the limit that was in force before (``mx.set_wired_limit`` returns it), to hand back
    to :func:`restore_wired_limit` on unload; None when Metal is not available or MLX refused the
    value (for example one above the system's wired limit), and nothing changed.
    """
    if limit_bytes < 0 or not metal_available():
        return None
    try:
        import mlx.core as mx

        return int(mx.set_wired_limit(int(limit_bytes)))
    except Exception:
        log.warning("MLX refused a wired limit of %d bytes", limit_bytes, exc_info=True)
        return None


def restore_wired_limit(previous_bytes: int | None) -> None:
    """Put back the wired limit :func:`set_wired_limit` replaced (as mlx-lm's ``wired_limit``
    context manager does once generation is over), after the GPU's queued work has finished."""
    if previous_bytes is None or not metal_available():
        return
    try:
        import mlx.core as mx

        mx.synchronize()
        mx.set_wired_limit(int(previous_bytes))
    except Exception:
        log.warning("could not restore the wired limit to %d bytes", previous_bytes, exc_info=True)


__all__ = [
    "iogpu_wired_limit_bytes",
    "is_apple_silicon",
    "is_macos",
    "metal_available",
    "metal_device_info",
    "recommended_working_set_bytes",
    "restore_wired_limit",
    "set_wired_limit",
    "sysctl_int",
]
