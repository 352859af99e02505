"""``pgd_step_``: one projected-gradient-ascent step on the perturbation, fused with its norm.

One pass over memory: read eps and grad, write eps, and emit one partial sum of squares per
program; the partials are summed in a fixed order, so the result is deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _checks
from . import _triton_common as tc


@triton.jit
def _pgd_step_kernel(
    eps_ptr,
    eps_store_ptr,
    grad_ptr,
    partial_ptr,
    n,
    step,
    EPS_BF16: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    # int64 indices: tensors may hold more than 2**31 elements.
    idx = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    e = tl.load(eps_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(grad_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    e = e + step * g
    if EPS_BF16:
        bits = tc.rne_bf16(e.to(tl.uint32, bitcast=True))
        tl.store(eps_store_ptr + idx, bits.to(tl.int16), mask=mask)
        e = tc.bf16_bits_to_fp32(bits)  # the norm is of the eps actually stored
    else:
        tl.store(eps_store_ptr + idx, e, mask=mask)
    # Masked lanes loaded zeros, so they add nothing.
    tl.store(partial_ptr + pid, tl.sum(e * e, axis=0))


def pgd_step_triton(
    eps: torch.Tensor,
    grad: torch.Tensor,
    step: float,
    *,
    block: int | None = None,
    num_warps: int = tc.GPU_WARPS,
) -> torch.Tensor:
    """``eps += step * grad`` in place (fp32 math); returns ``sum(eps**2)`` as an fp32 scalar.

    ``eps``: fp32 or bf16; ``grad``: any float dtype; same shape and device, contiguous.
    ``block`` (a power of two) defaults to the backend's choice.
    """
    _checks.check_tensor("eps", eps, _checks.EPS_DTYPES)
    _checks.check_tensor("grad", grad, _checks.GRAD_DTYPES)
    _checks.check_same("eps", eps, {"grad": grad})
    step = _checks.check_scalar("step", step)
    tc.check_device("eps", eps.device)
    n = eps.numel()
    if n == 0:
        return tc.zero_scalar(eps.device)
    block = tc.pick_block(n, block)
    parts = tc.partials(n, block, eps.device)
    _pgd_step_kernel[(parts.numel(),)](
        eps,
        tc.store_view(eps),
        grad,
        parts,
        n,
        step,
        EPS_BF16=eps.dtype == torch.bfloat16,
        BLOCK=block,
        num_warps=num_warps,
        **tc.LAUNCH_OPTIONS,
    )
    return parts.sum()
