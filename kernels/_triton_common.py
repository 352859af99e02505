"""Pieces shared by the Triton kernels: bit-level rounding, 16-bit stores, launch helpers.

Rounding is written on the fp32 bit pattern rather than as a cast because the Triton interpreter
truncates fp32 -> bf16 casts where the GPU and torch round to nearest even; on bits, the
interpreter, the GPU and torch agree exactly. 16-bit results are stored through an int16 view of
the output, so no backend ever performs the narrowing cast itself.

Importing this module imports Triton; ``ops`` does so lazily.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

try:  # the interpreter's function type moved between Triton releases; absent means "not in use"
    from triton.runtime.interpreter import InterpretedFunction as _InterpretedFunction
except ImportError:  # pragma: no cover - depends on the installed Triton
    _InterpretedFunction = ()


@triton.jit
def _probe() -> None:
    pass


# True when this process decorated the kernels under TRITON_INTERPRET=1: they then run on CPU
# tensors. Decided once, at import, exactly as Triton decided it for the kernels themselves.
INTERPRETED: bool = isinstance(_probe, _InterpretedFunction)

# Output kinds, passed to kernels as a constexpr.
KIND_FP32 = 0
KIND_BF16 = 1
KIND_FP16 = 2
_KINDS = {torch.float32: KIND_FP32, torch.bfloat16: KIND_BF16, torch.float16: KIND_FP16}

# Default elements per program. Compiled kernels are memory-bound and want a few vector loads per
# thread; the interpreter pays per numpy call, so it wants each program as large as possible.
GPU_BLOCK = 4096
GPU_WARPS = 8
INTERPRETER_BLOCK = 65536

# No fused multiply-add: ``w + e * scale`` must round exactly as the separate multiply and add of
# the torch reference and the interpreter do, so RNE outputs agree bit for bit on every backend.
# Memory-bound kernels lose nothing by it. Passing it explicitly also pins behaviour across
# Triton releases, whose default is changing.
LAUNCH_OPTIONS: dict[str, bool] = {"enable_fp_fusion": False}


# --------------------------------------------------------------------------------------------
# Device code
# --------------------------------------------------------------------------------------------


@triton.jit
def rne_bf16(u):
    """Round fp32 bits ``u`` (uint32) to bf16 bits, nearest-even; NaN becomes the quiet NaN."""
    a = u & 0x7FFFFFFF
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return tl.where(a > 0x7F800000, 0x7FC0, r)


@triton.jit
def sr_bf16(u, rand):
    """Stochastically round fp32 bits ``u`` to bf16 bits with uniform 32-bit words ``rand``."""
    a = u & 0x7FFFFFFF
    r = (a + (rand & 0xFFFF)) >> 16
    r = tl.where(a > 0x7F800000, 0x7FC0, r)
    return r | ((u >> 16) & 0x8000)


@triton.jit
def _fp16_subnormal_parts(a):
    """Split fp32 magnitude bits ``a`` below 2**-14 in units of 2**-24: (whole, rest, rest mask, exponent)."""
    e = a >> 23
    m = (a & 0x7FFFFF) | tl.where(e > 0, 0x800000, 0).to(tl.uint32)
    # 126 - e wraps for large e; those lanes take another branch, the clamp only avoids shifting
    # by >= 32, which is undefined on the GPU.
    shift = tl.minimum(126 - e, 31)
    mask = (tl.full(a.shape, 1, tl.uint32) << shift) - 1
    return m >> shift, m & mask, mask, e


@triton.jit
def rne_fp16(u):
    """Round fp32 bits ``u`` to fp16 bits, nearest-even, subnormals and overflow to inf included."""
    sign = (u >> 16) & 0x8000
    a = u & 0x7FFFFFFF
    h = a - 0x38000000  # rebias the exponent from 127 to 15
    normal = (h + 0xFFF + ((h >> 13) & 1)) >> 13
    q, rem, mask, _ = _fp16_subnormal_parts(a)
    half = (mask >> 1) + 1
    up = (rem > half) | ((rem == half) & ((q & 1) == 1))
    sub = q + up.to(tl.uint32)
    r = tl.where(a >= 0x38800000, normal, sub)
    r = tl.where(a >= 0x477FF000, 0x7C00, r)  # 65520 and above round to inf
    r = tl.where(a > 0x7F800000, 0x7E00, r)
    return r | sign


@triton.jit
def sr_fp16(u, rand):
    """Stochastically round fp32 bits ``u`` to fp16 bits with uniform 32-bit words ``rand``."""
    sign = (u >> 16) & 0x8000
    a = u & 0x7FFFFFFF
    normal = ((a - 0x38000000) + (rand & 0x1FFF)) >> 13
    q, rem, mask, e = _fp16_subnormal_parts(a)
    sub = q + ((rand & mask) < rem).to(tl.uint32)
    sub = tl.where(e <= 94, 0, sub)  # below 2**-32: too few random bits, round to zero
    r = tl.where(a >= 0x38800000, normal, sub)
    r = tl.where(a >= 0x47800000, 0x7C00, r)
    r = tl.where(a > 0x7F800000, 0x7E00, r)
    return r | sign


@triton.jit
def store_rounded(
    out_ptr, idx, mask, value, rand, OUT_KIND: tl.constexpr, STOCHASTIC: tl.constexpr
):
    """Store fp32 ``value`` at ``out_ptr + idx``; 16-bit kinds go through an int16 view."""
    if OUT_KIND == 0:
        tl.store(out_ptr + idx, value, mask=mask)
    else:
        u = value.to(tl.uint32, bitcast=True)
        if OUT_KIND == 1:
            bits = sr_bf16(u, rand) if STOCHASTIC else rne_bf16(u)
        else:
            bits = sr_fp16(u, rand) if STOCHASTIC else rne_fp16(u)
        tl.store(out_ptr + idx, bits.to(tl.int16), mask=mask)


@triton.jit
def bf16_bits_to_fp32(bits):
    """Widen bf16 bit patterns (uint32 holding 16 bits) to fp32 values."""
    return (bits << 16).to(tl.float32, bitcast=True)


# --------------------------------------------------------------------------------------------
# Host helpers
# --------------------------------------------------------------------------------------------


def out_kind(t: torch.Tensor) -> int:
    """The constexpr output kind for ``t``'s dtype."""
    return _KINDS[t.dtype]


def store_view(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself for fp32, its int16 bit view (no copy) for 16-bit dtypes."""
    return t if t.dtype == torch.float32 else t.view(torch.int16)


def check_device(name: str, device: torch.device) -> None:
    """Check that compiled kernels (or the interpreter) can address memory on ``device``."""
    if device.type == "cuda" or (device.type == "cpu" and INTERPRETED):
        return
    hint = (
        "set TRITON_INTERPRET=1 before importing panacea_patch.kernels to run kernels on CPU"
        if device.type == "cpu"
        else "move it to a CUDA device"
    )
    raise ValueError(f"{name} is on {device}; the Triton kernels need CUDA tensors ({hint})")


def pick_block(numel: int, block: int | None) -> int:
    """Validate an explicit block size or choose the default for this backend."""
    if block is None:
        if not INTERPRETED:
            return GPU_BLOCK
        return min(INTERPRETER_BLOCK, max(16, triton.next_power_of_2(max(numel, 1))))
    if isinstance(block, bool) or not isinstance(block, int) or block < 16 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 16, got {block!r}")
    return block


def partials(numel: int, block: int, device: torch.device) -> torch.Tensor:
    """One fp32 slot per program, for block partial sums (summed on the host side in torch)."""
    return torch.empty(triton.cdiv(numel, block), dtype=torch.float32, device=device)


def zero_scalar(device: torch.device) -> torch.Tensor:
    """The fp32 scalar zero returned by reductions over nothing."""
    return torch.zeros((), dtype=torch.float32, device=device)


__all__ = [
    "GPU_BLOCK",
    "GPU_WARPS",
    "INTERPRETED",
    "INTERPRETER_BLOCK",
    "LAUNCH_OPTIONS",
    "bf16_bits_to_fp32",
    "check_device",
    "out_kind",
    "partials",
    "pick_block",
    "rne_bf16",
    "rne_fp16",
    "sr_bf16",
    "sr_fp16",
    "store_rounded",
    "store_view",
    "zero_scalar",
]
