"""The paper's baseline: Gaussian noise scaled to ‖ε‖₂ = ρ over the target set.

Streams shard by shard and never materialises the noise: pass one sums z² per tensor, pass two
regenerates the same z (same seed and counters) while writing. ``z`` is a pure function of the seed
and the counter on each backend: Triton's ``tl.randn`` (Philox) on GPU, torch's CPU generator in
counter-addressed blocks on CPU (``kernels/cpu_noise.py``), where the norm pass draws almost
nothing. Same seed, same backend: the same bytes for any shard layout, chunk size and thread
count. CPU and GPU draw different noise; ``generator`` names the one used.
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
    return math.sqrt(math.fsum(float(s) for s in sums))


class RandomTransform:
    """``w' = round(w + s·z)`` for targeted tensors, with s = ρ / ‖z‖."""

    def __init__(
        self, targets: list[Target], *, rho: float, seed: int, device: torch.device | None = None
    ) -> None:
        self.offsets = noise_offsets(targets)
        self.seed = seed
        # On CUDA the fused kernels generate the noise, on CPU cpu_noise: different streams.
        self.device = device or torch.device("cpu")
        self.generator = ops.noise_generator(self.device)
        self.scale = rho / noise_norm(targets, seed, self.device)
        # (||w' - w||, ||w||) by tensor, where the op measured them while writing (CPU path);
        # MeasuringTransform takes them instead of reading both tensors again.
        self.measured: dict[str, tuple[float, float]] = {}

    def __call__(self, name: str, w0: torch.Tensor) -> torch.Tensor | None:
        if name not in self.offsets:
            return None
        w = w0.to(self.device)
        out = torch.empty_like(w)
        sums = ops.randn_apply_(w, out, self.scale, self.seed, self.offsets[name], norms=True)
        if sums is not None:
            self.measured[name] = (math.sqrt(sums[0]), math.sqrt(sums[1]))
        return out.cpu()
