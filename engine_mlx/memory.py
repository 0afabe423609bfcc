"""Will a checkpoint fit? Weights + KV cache + linear-attention state + overhead, vs the budget.

The budget on Apple silicon is the GPU wired (working-set) limit, because Metal cannot use more than
that however much RAM is free; elsewhere it is RAM minus a reserve for the operating system.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from dataclasses import dataclass
from enum import Enum

from . import platform
from .checkpoint import ModelInfo
from .errors import MemoryFitError
from .mtp_head import MtpSource
from .sizes import human_bytes

GIB = 1024**3
MIB = 1024**2
# Keys, values and the conv window have the activations' dtype (ModelInfo.activation_dtype);
# mlx-lm and mlx-vlm keep the gated-delta recurrent state in float32 whatever the checkpoint.
ACTIVATION_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
RECURRENT_STATE_BYTES = 4
OVERHEAD_FIXED_BYTES = 3 * GIB // 2  # activations, the MLX runtime, the vision tower's buffers
OVERHEAD_WEIGHT_PERCENT = 5
OS_RESERVE_FRACTION = 0.15  # off Apple silicon: leave the larger of 15% of RAM ...
OS_RESERVE_MIN_BYTES = 4 * GIB  # ... or 4 GiB for the OS and other programs
MACOS_RESERVE_BYTES = 8 * GIB  # never advise a wired limit that leaves macOS less than this
DEFAULT_WORKING_SET_FRACTION = 0.75  # Metal's usual default when the real limit cannot be read
FITS_FRACTION = 0.85  # up to this share of the budget is a comfortable fit; above it is tight


class FitVerdict(str, Enum):
    FITS = "fits"
    TIGHT = "tight"
    DOES_NOT_FIT = "does_not_fit"


@dataclass(frozen=True)
class MachineMemory:
    total_bytes: int
    available_bytes: int
    wired_limit_bytes: int | None  # the GPU working-set limit on Apple silicon; None elsewhere
    is_apple_silicon: bool
    # MLX runs on its CPU backend (no Metal): bfloat16/float16 checkpoints compute in float32 there
    cpu_backend: bool = False


@dataclass(frozen=True)
class FitEstimate:
    weights_bytes: int
    kv_bytes: int
    linear_state_bytes: int
    overhead_bytes: int
    total_bytes: int
    budget_bytes: int
    verdict: FitVerdict
    advice: str  # what to do about a tight or failed fit; "" when it fits
    context_tokens: int = 0
    budget_source: str = "usable RAM"  # what the budget is: "usable RAM" or "GPU memory limit"
    model_name: str = ""

    def summary(self) -> str:
        """One line, for the model picker, the CLI and MemoryFitError."""
        label = {
            FitVerdict.FITS: "fits",
            FitVerdict.TIGHT: "tight fit",
            FitVerdict.DOES_NOT_FIT: "does not fit",
        }[self.verdict]
        return (
            f"{label}: needs {human_bytes(self.total_bytes)} (weights {human_bytes(self.weights_bytes)}, "
            f"KV cache {human_bytes(self.kv_bytes)} for {self.context_tokens:,} tokens, "
            f"linear-attention state {human_bytes(self.linear_state_bytes)}, "
            f"overhead {human_bytes(self.overhead_bytes)}) of {human_bytes(self.budget_bytes)} "
            f"{self.budget_source}"
        )


# ------------------------------------------------------------------------------------- the machine


def _total_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return platform.sysctl_int("hw.memsize") or 0


def _available_ram(total: int) -> int:
    """MemAvailable on Linux; free + inactive + speculative pages on macOS; else the total."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if platform.is_macos():
        try:
            out = subprocess.run(
                ["vm_stat"], capture_output=True, text=True, timeout=2.0, check=True
            ).stdout
            page_match = re.search(r"page size of (\d+) bytes", out)
            page = int(page_match.group(1)) if page_match else 4096
            pages = sum(
                int(m.group(1))
                for key in ("free", "inactive", "speculative")
                if (m := re.search(rf"Pages {key}:\s+(\d+)", out))
            )
            return pages * page
        except (OSError, subprocess.SubprocessError, AttributeError, ValueError):
            pass
    return total


def machine_memory() -> MachineMemory:
    """This machine's RAM and, on Apple silicon, how much of it the GPU may keep wired."""
    total = _total_ram()
    apple = platform.is_apple_silicon()
    wired = None
    if apple:
        # A limit raised with `sudo sysctl iogpu.wired_limit_mb=N` is read fresh; Metal's own
        # figure may have been taken when the process started.
        wired = platform.iogpu_wired_limit_bytes() or platform.recommended_working_set_bytes()
    return MachineMemory(
        total_bytes=total,
        available_bytes=_available_ram(total),
        wired_limit_bytes=wired,
        is_apple_silicon=apple,
        cpu_backend=platform.cpu_backend(),
    )


# --------------------------------------------------------------------------------------- estimate


def activation_bytes(info: ModelInfo, machine: MachineMemory | None = None) -> int:
    """Bytes per element of the activations, so of the KV cache and the conv window: the checkpoint's
    dtype, or float32 on a ``machine`` whose MLX runs on the CPU backend (the runtime casts there)."""
    dtype = info.activation_dtype
    if machine is not None and machine.cpu_backend and dtype in ("bfloat16", "float16"):
        dtype = "float32"
    return ACTIVATION_DTYPE_BYTES[dtype]


def weight_bytes(info: ModelInfo, machine: MachineMemory | None = None) -> int:
    """The weights in memory: as stored, but half floats as float32 on a CPU-backend ``machine``; with
    the MTP head of an mtp/ folder (an embedded head's tensors are in ``info.weight_bytes`` already)."""
    cast = info.half_float_bytes if machine is not None and machine.cpu_backend else 0
    head = info.mtp.weight_bytes if info.mtp and info.mtp.source is not MtpSource.EMBEDDED else 0
    return info.weight_bytes + cast + head


def vision_weight_bytes(info: ModelInfo, machine: MachineMemory | None = None) -> int:
    """The vision tower's part of :func:`weight_bytes` (its half floats as float32 on a CPU-backend
    ``machine``, as ``load_vision_side`` casts them)."""
    cast = info.vision_half_float_bytes if machine is not None and machine.cpu_backend else 0
    return info.vision_weight_bytes + cast


def kv_bytes_per_token(info: ModelInfo, machine: MachineMemory | None = None) -> int:
    """K and V for every full-attention layer (the MTP head's layers included: they are full
    attention); linear-attention layers keep no per-token cache."""
    per_layer = info.num_key_value_heads * info.head_dim * activation_bytes(info, machine)
    return 2 * (info.num_full_attention_layers + (info.mtp.layers if info.mtp else 0)) * per_layer


def linear_state_bytes(info: ModelInfo, machine: MachineMemory | None = None) -> int:
    """Fixed state of the gated-delta (linear attention) layers: conv window + recurrent state."""
    conv_channels = (
        2 * info.linear_num_key_heads * info.linear_key_head_dim
        + info.linear_num_value_heads * info.linear_value_head_dim
    )
    conv = max(info.linear_conv_kernel_dim - 1, 0) * conv_channels * activation_bytes(info, machine)
    recurrent = (
        info.linear_num_value_heads
        * info.linear_key_head_dim
        * info.linear_value_head_dim
        * RECURRENT_STATE_BYTES
    )
    return info.num_linear_attention_layers * (conv + recurrent)


def _budget(machine: MachineMemory) -> tuple[int, str]:
    if machine.is_apple_silicon:
        if machine.wired_limit_bytes:
            return machine.wired_limit_bytes, "GPU memory limit"
        estimated = int(machine.total_bytes * DEFAULT_WORKING_SET_FRACTION)
        return estimated, "GPU memory limit (estimated)"
    reserve = max(int(machine.total_bytes * OS_RESERVE_FRACTION), OS_RESERVE_MIN_BYTES)
    return max(machine.total_bytes - reserve, 0), "usable RAM"


def _wired_limit_advice(total: int, budget: int, machine: MachineMemory) -> str | None:
    """`sudo sysctl iogpu.wired_limit_mb=N` advice, when raising the limit would make room."""
    if not machine.is_apple_silicon:
        return None
    ceiling_mib = (machine.total_bytes - MACOS_RESERVE_BYTES) // MIB
    if total >= ceiling_mib * MIB:
        return None
    wanted_mib = math.ceil(total / FITS_FRACTION / GIB) * 1024  # a comfortable fit, in whole GiB
    limit_mib = min(wanted_mib, ceiling_mib)
    if limit_mib * MIB <= budget:
        return None  # the limit is already as high as is safe
    return (
        f"Raise the GPU memory limit from {human_bytes(budget)}: run "
        f"`sudo sysctl iogpu.wired_limit_mb={limit_mib}` in Terminal "
        f"(leaves at least {human_bytes(MACOS_RESERVE_BYTES)} for macOS; "
        "the setting resets when the Mac restarts)."
    )


def _advice(
    verdict: FitVerdict,
    total: int,
    budget: int,
    kv_per_token: int,
    context: int,
    machine: MachineMemory,
) -> str:
    if verdict is FitVerdict.FITS:
        return ""
    if raise_limit := _wired_limit_advice(total, budget, machine):
        return raise_limit
    if verdict is FitVerdict.TIGHT:
        return (
            f"Only {human_bytes(budget - total)} would be left; close memory-hungry apps, "
            "or use a shorter context."
        )
    missing = total - budget
    advice = f"About {human_bytes(missing)} is missing: use a smaller model or quantization"
    if kv_per_token:
        max_context = context - math.ceil(missing / kv_per_token)
        if max_context > 0:
            advice += f", or a context of at most {max_context:,} tokens (now {context:,})"
    return advice + "."


def estimate_fit(
    info: ModelInfo,
    context_tokens: int,
    machine: MachineMemory | None = None,
    *,
    ranks: int = 1,
    rank: int = 0,
) -> FitEstimate:
    """Memory needed for ``info`` with a ``context_tokens`` cache, and whether it fits here; with
    ``ranks``, the share of ``rank`` in a model split over that many machines: about an equal part
    of the language model, and on rank 0 the whole vision tower besides."""
    if context_tokens < 0:
        raise ValueError(f"context_tokens must not be negative, got {context_tokens}")
    machine = machine_memory() if machine is None else machine
    shares = max(1, ranks)
    vision = vision_weight_bytes(info, machine)
    weights = (weight_bytes(info, machine) - vision) // shares + (vision if rank == 0 else 0)
    per_token = kv_bytes_per_token(info, machine) // shares
    kv = per_token * context_tokens
    state = linear_state_bytes(info, machine) // shares
    overhead = OVERHEAD_FIXED_BYTES + weights * OVERHEAD_WEIGHT_PERCENT // 100
    total = weights + kv + state + overhead
    budget, source = _budget(machine)
    if total <= FITS_FRACTION * budget:
        verdict = FitVerdict.FITS
    elif total <= budget:
        verdict = FitVerdict.TIGHT
    else:
        verdict = FitVerdict.DOES_NOT_FIT
    return FitEstimate(
        weights_bytes=weights,
        kv_bytes=kv,
        linear_state_bytes=state,
        overhead_bytes=overhead,
        total_bytes=total,
        budget_bytes=budget,
        verdict=verdict,
        advice=_advice(verdict, total, budget, per_token, context_tokens, machine),
        context_tokens=context_tokens,
        budget_source=source,
        model_name=info.name,
    )


def check_fit(estimate: FitEstimate, force: bool = False) -> None:
    """Refuse to load (MemoryFitError) when the model does not fit, unless ``force``."""
    if estimate.verdict is FitVerdict.DOES_NOT_FIT and not force:
        message = f"{estimate.model_name or 'The model'} {estimate.summary()}."
        if estimate.advice:
            message += f" {estimate.advice}"
        raise MemoryFitError(message)


__all__ = [
    "FitEstimate",
    "FitVerdict",
    "MachineMemory",
    "activation_bytes",
    "check_fit",
    "estimate_fit",
    "kv_bytes_per_token",
    "linear_state_bytes",
    "machine_memory",
    "vision_weight_bytes",
]
