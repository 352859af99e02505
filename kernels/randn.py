"""``randn_sumsq`` and ``randn_apply_``: the random method without materializing the noise.

``z[i]`` is ``tl.randn(seed, offset + i)``: a pure function of the seed and the counter, so it is
the same for any block size, and the two passes (norm, then apply) see the same noise.

This is the GPU stream only. The CPU path (``cpu_noise``) draws different noise, ~4 ns per element:
the same seed gives the same bytes on the same backend, not across backends. The tests check these
kernels against ``reference.philox_normal`` (an exact emulation of ``tl.randn``), the normal law
and their own determinism, not against the CPU path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _checks
from . import _triton_common as tc


# The Philox seed and offset only feed arithmetic: specializing on their values would only
# multiply compilations.
@triton.jit(do_not_specialize=["seed", "offset"])
def _randn_sumsq_kernel(partial_ptr, n, seed, offset, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    idx = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    z = tl.randn(seed, offset + idx)
    z = tl.where(idx < n, z, 0.0)
    tl.store(partial_ptr + pid, tl.sum(z * z, axis=0))


@triton.jit(do_not_specialize=["seed", "offset"])
def _randn_apply_kernel(
    w0_ptr, out_ptr, n, scale, seed, offset, OUT_KIND: tl.constexpr, BLOCK: tl.constexpr
):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    w = tl.load(w0_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    z = tl.randn(seed, offset + idx)
    tc.store_rounded(out_ptr, idx, mask, w + scale * z, idx.to(tl.uint32), OUT_KIND, False)


def randn_sumsq_triton(
    numel: int,
    seed: int,
    offset: int,
    device: torch.device | str = "cuda",
    *,
    block: int | None = None,
    num_warps: int = tc.GPU_WARPS,
) -> torch.Tensor:
    """``sum(z**2)`` over the Philox normals at counters ``offset + i``, ``i < numel`` (fp32)."""
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise ValueError(f"numel must be a non-negative int, got {numel!r}")
    seed, offset = _checks.check_stream(seed, offset, numel)
    device = torch.device(device)
    tc.check_device("device", device)
    if numel == 0:
        return tc.zero_scalar(device)
    block = tc.pick_block(numel, block)
    parts = tc.partials(numel, block, device)
    _randn_sumsq_kernel[(parts.numel(),)](
        parts, numel, seed, offset, BLOCK=block, num_warps=num_warps, **tc.LAUNCH_OPTIONS
    )
    return parts.sum()


def randn_apply_triton(
    w0: torch.Tensor,
    out: torch.Tensor,
    scale: float,
    seed: int,
    offset: int,
    *,
    block: int | None = None,
    num_warps: int = tc.GPU_WARPS,
) -> None:
    """``out = round_nearest(w0 + scale * z)``; ``out`` may be ``w0``."""
    _checks.check_tensor("w0", w0, _checks.WEIGHT_DTYPES)
    _checks.check_tensor("out", out, _checks.WEIGHT_DTYPES)
    _checks.check_same("w0", w0, {"out": out})
    scale = _checks.check_scalar("scale", scale)
    seed, offset = _checks.check_stream(seed, offset, w0.numel())
    tc.check_device("w0", w0.device)
    n = w0.numel()
    if n == 0:
        return
    block = tc.pick_block(n, block)
    _randn_apply_kernel[(triton.cdiv(n, block),)](
        w0,
        tc.store_view(out),
        n,
        scale,
        seed,
        offset,
        OUT_KIND=tc.out_kind(out),
        BLOCK=block,
        num_warps=num_warps,
        **tc.LAUNCH_OPTIONS,
    )
