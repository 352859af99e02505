"""The paper's baseline: Gaussian noise scaled to ‖ε‖₂ = ρ over the target set.

Streams shard by shard and never materialises the noise: pass one sums z² per tensor from the
Philox stream, pass two regenerates the same z (same seed and offsets) while writing.
"""

from __future__ import annotations

import math

import torch

from ..kernels import ops
from ..targets import Target


def noise_offsets(targets: list[Target]) -> dict[str, int]:
    """Philox counter offset of each tensor: cumulative element counts in target-set order."""
    offsets, pos = {}, 0
    for t in targets:
        offsets[t.name] = pos
        pos += t.numel
    return offsets


def noise_norm(targets: list[Target], seed: int, device: torch.device | None = None) -> float:
    """‖z‖₂ over the whole target set, without materialising z."""
    offsets = noise_offsets(targets)
    dev = device or torch.device("cpu")
    sums = [ops.randn_sumsq(t.numel, seed, offsets[t.name], device=dev) for t in targets]
    return math.sqrt(float(torch.stack(sums).double().sum()))


class RandomTransform:
    """``w' = round(w + s·z)`` for targeted tensors, with s = ρ / ‖z‖."""

    def __init__(
        self, targets: list[Target], *, rho: float, seed: int, device: torch.device | None = None
    ) -> None:
        self.offsets = noise_offsets(targets)
        self.seed = seed
        # On CUDA the fused kernels generate the noise; the same seed gives the same z anywhere.
        self.device = device or torch.device("cpu")
        self.scale = rho / noise_norm(targets, seed, self.device)

    def __call__(self, name: str, w0: torch.Tensor) -> torch.Tensor | None:
        if name not in self.offsets:
            return None
        w = w0.to(self.device)
        out = torch.empty_like(w)
        ops.randn_apply_(w, out, self.scale, self.seed, self.offsets[name])
        return out.cpu()
