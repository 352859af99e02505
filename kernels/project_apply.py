"""``project_apply_``: scale the perturbation onto its budget and write the patched weight.

One pass: read eps (and write it back when the scale is not 1), read w0, write
``out = round(w0 + eps)`` with bit-level round-to-nearest-even or stochastic rounding.
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
def _project_apply_kernel(
    eps_ptr,
    eps_store_ptr,
    w0_ptr,
    out_ptr,
    n,
    scale,
    seed,
    offset,
    EPS_BF16: tl.constexpr,
    WRITE_EPS: tl.constexpr,
    OUT_KIND: tl.constexpr,
    STOCHASTIC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    e = tl.load(eps_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    if WRITE_EPS:
        e = e * scale
        if EPS_BF16:
            bits = tc.rne_bf16(e.to(tl.uint32, bitcast=True))
            tl.store(eps_store_ptr + idx, bits.to(tl.int16), mask=mask)
            e = tc.bf16_bits_to_fp32(bits)  # apply the eps actually stored
        else:
            tl.store(eps_store_ptr + idx, e, mask=mask)
    w = tl.load(w0_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    if STOCHASTIC and OUT_KIND != 0:
        # Word 2 of the Philox block: tl.randn uses words 0 and 1 of the same counter.
        _, _, rand, _ = tl.randint4x(seed, offset + idx)
    else:
        rand = idx.to(tl.uint32)  # unused placeholder
    tc.store_rounded(out_ptr, idx, mask, w + e, rand, OUT_KIND, STOCHASTIC)


def project_apply_triton(
    eps: torch.Tensor,
    w0: torch.Tensor,
    out: torch.Tensor,
    scale: float,
    rounding: str = "nearest",
    seed: int = 0,
    offset: int = 0,
    *,
    block: int | None = None,
    num_warps: int = tc.GPU_WARPS,
) -> None:
    """``eps *= scale`` in place, then ``out = round(w0 + eps)`` in ``out.dtype``.

    ``eps``: fp32 or bf16; ``w0``, ``out``: fp32, bf16 or fp16 (``out`` may be ``w0``); all the
    same shape and device, contiguous. ``rounding``: ``"nearest"`` or ``"stochastic"`` (Philox
    bits for ``seed`` at counters ``offset + i``).
    """
    _checks.check_tensor("eps", eps, _checks.EPS_DTYPES)
    _checks.check_tensor("w0", w0, _checks.WEIGHT_DTYPES)
    _checks.check_tensor("out", out, _checks.WEIGHT_DTYPES)
    _checks.check_same("eps", eps, {"w0": w0, "out": out})
    scale = _checks.check_scalar("scale", scale)
    stochastic = _checks.check_rounding(rounding) == "stochastic"
    seed, offset = _checks.check_stream(seed, offset, eps.numel())
    tc.check_device("eps", eps.device)
    n = eps.numel()
    if n == 0:
        return
    block = tc.pick_block(n, block)
    _project_apply_kernel[(triton.cdiv(n, block),)](
        eps,
        tc.store_view(eps),
        w0,
        tc.store_view(out),
        n,
        scale,
        seed,
        offset,
        EPS_BF16=eps.dtype == torch.bfloat16,
        WRITE_EPS=scale != 1.0,
        OUT_KIND=tc.out_kind(out),
        STOCHASTIC=stochastic,
        BLOCK=block,
        num_warps=num_warps,
        **tc.LAUNCH_OPTIONS,
    )
