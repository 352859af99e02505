"""ε on the trained weights: ``w ← w + ε`` through the kernels, measuring what survives rounding."""

from __future__ import annotations

import math

import torch

from ..kernels import ops
from ..measure import TensorStats
from ..targets import block_index, module_type


def apply_eps(
    params: dict[str, torch.nn.Parameter],
    eps: dict[str, torch.Tensor],
    *,
    names: dict[str, str],
    dtypes: dict[str, torch.dtype],
) -> list[TensorStats]:
    """``w ← w + ε`` per tensor through ``ops.project_apply_``, measuring what survives rounding
    to each tensor's saved dtype (one tensor's copies at a time)."""
    stats = []
    with torch.no_grad():
        for n, p in params.items():
            e = eps.get(n)
            if e is None:
                continue
            before = p.detach().to(dtypes[n], copy=True)
            ops.project_apply_(e, p.data, p.data, 1.0)
            diff = p.detach().to(dtypes[n]).float() - before.float()
            stats.append(_stats(names[n], p, diff, before))
            del before, diff
    return stats


def _stats(name: str, p: torch.Tensor, diff: torch.Tensor, w: torch.Tensor) -> TensorStats:
    norm_eps = math.sqrt(float(ops.multi_sumsq([diff.contiguous()])))
    norm_w = math.sqrt(float(ops.multi_sumsq([w.float().contiguous()])))
    block = block_index(name)
    return TensorStats(
        name=name,
        layer=block[1] if block else None,
        module=module_type(block[2] if block else name),
        numel=p.numel(),
        norm_eps=norm_eps,
        norm_w=norm_w,
        rel=norm_eps / norm_w if norm_w else 0.0,
    )
