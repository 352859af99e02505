"""``multi_sumsq``: sum of squares over many tensors (a LoRA gradient norm) in one launch per dtype.

The host builds a table of data pointers and sizes plus a (tensor, block start) pair per program;
each program reads one block of one tensor through a pointer loaded from the table. Hundreds of
small adapter tensors then cost one launch instead of hundreds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from . import _checks
from . import _triton_common as tc

_TL_DTYPES = {
    torch.float32: tl.float32,
    torch.bfloat16: tl.bfloat16,
    torch.float16: tl.float16,
    torch.float64: tl.float64,
}


@triton.jit
def _multi_sumsq_kernel(
    meta_ptr, partial_ptr, n_tensors, n_programs, DTYPE: tl.constexpr, BLOCK: tl.constexpr
):
    # meta = [pointers (n_tensors), numels (n_tensors), program tensor (n_programs),
    #         program start (n_programs)], all int64.
    pid = tl.program_id(0)
    t = tl.load(meta_ptr + 2 * n_tensors + pid)
    start = tl.load(meta_ptr + 2 * n_tensors + n_programs + pid)
    n = tl.load(meta_ptr + n_tensors + t)
    base = tl.load(meta_ptr + t).to(tl.pointer_type(DTYPE))
    idx = start + tl.arange(0, BLOCK)
    x = tl.load(base + idx, mask=idx < n, other=0.0).to(tl.float32)
    tl.store(partial_ptr + pid, tl.sum(x * x, axis=0))


def _meta(group: list[torch.Tensor], block: int) -> torch.Tensor:
    """The int64 launch table for one dtype group, built on the host."""
    ptrs = torch.tensor([t.data_ptr() for t in group], dtype=torch.int64)
    numels = torch.tensor([t.numel() for t in group], dtype=torch.int64)
    blocks = (numels + block - 1) // block
    prog_tensor = torch.repeat_interleave(torch.arange(len(group)), blocks)
    first = torch.cumsum(blocks, 0) - blocks
    prog_start = (torch.arange(prog_tensor.numel()) - first[prog_tensor]) * block
    return torch.cat([ptrs, numels, prog_tensor, prog_start])


def multi_sumsq_triton(
    tensors: Sequence[torch.Tensor],
    *,
    block: int | None = None,
    num_warps: int = tc.GPU_WARPS,
) -> torch.Tensor:
    """``sum(t**2)`` over all elements of all ``tensors`` (fp32 accumulation) as an fp32 scalar.

    The tensors must be contiguous float tensors on one device; one launch per distinct dtype.
    """
    ts = _checks.check_tensor_list(tensors)
    ts = [t for t in ts if t.numel() > 0]
    if not ts:
        device = tensors[0].device if len(tensors) else torch.device("cpu")
        return tc.zero_scalar(device)
    device = ts[0].device
    tc.check_device("tensors[0]", device)
    if tc.INTERPRETED and device.type != "cpu":
        # The interpreter stages kernel arguments through host memory, but pointers read from
        # the table would still point at device memory.
        raise ValueError("multi_sumsq under TRITON_INTERPRET=1 needs CPU tensors")
    block = tc.pick_block(max(t.numel() for t in ts), block)
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in ts:
        groups.setdefault(t.dtype, []).append(t)
    sums = []
    for dtype, group in groups.items():
        meta = _meta(group, block).to(device)
        n_programs = meta.numel() // 2 - len(group)
        parts = torch.empty(n_programs, dtype=torch.float32, device=device)
        _multi_sumsq_kernel[(n_programs,)](
            meta,
            parts,
            len(group),
            n_programs,
            DTYPE=_TL_DTYPES[dtype],
            BLOCK=block,
            num_warps=num_warps,
            **tc.LAUNCH_OPTIONS,
        )
        sums.append(parts.sum())
    return torch.stack(sums).sum()
