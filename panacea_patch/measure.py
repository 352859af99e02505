"""Per-tensor statistics of a realized perturbation (what actually landed after rounding)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from .kernels import ops
from .safetensors_io import StreamingWriter, tensor_to_bytes
from .targets import Target


@dataclass
class TensorStats:
    """‖ε‖ and ‖w‖ for one tensor; ``share`` is its part of the total ‖ε‖²."""

    name: str
    layer: int | None
    module: str
    numel: int
    norm_eps: float
    norm_w: float
    rel: float = 0.0
    share: float = 0.0
    grad_share: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def tensor_stats(target: Target, w0: torch.Tensor, w1: torch.Tensor) -> TensorStats:
    diff = w1.to(torch.float32) - w0.to(torch.float32)
    norm_eps = math.sqrt(float(ops.multi_sumsq([diff])))
    norm_w = math.sqrt(float(ops.multi_sumsq([w0])))
    return TensorStats(
        target.name,
        target.layer,
        target.module,
        target.numel,
        norm_eps,
        norm_w,
        rel=norm_eps / norm_w if norm_w else 0.0,
    )


def finish_shares(stats: list[TensorStats]) -> float:
    """Fill each tensor's share of ‖ε‖²; returns the total realized ‖ε‖₂."""
    total = sum(s.norm_eps**2 for s in stats)
    for s in stats:
        s.share = s.norm_eps**2 / total if total else 0.0
    return math.sqrt(total)


class MeasuringTransform:
    """Wraps a transform and records the realized ‖w' − w‖ of every tensor it changes."""

    def __init__(
        self,
        inner: Callable[[str, torch.Tensor], torch.Tensor | None],
        targets: list[Target],
        *,
        delta: StreamingWriter | None = None,
    ) -> None:
        self.inner = inner
        self.targets = {t.name: t for t in targets}
        self.stats: list[TensorStats] = []
        # The realized w' - w in fp32 (exact for bf16/fp16 weights), so the patch can be reverted.
        self.delta = delta

    def __call__(self, name: str, w0: torch.Tensor) -> torch.Tensor | None:
        w1 = self.inner(name, w0)
        if w1 is not None and name in self.targets:
            stats = tensor_stats(self.targets[name], w0, w1)
            self.stats.append(stats)
            if self.delta is not None:
                self.delta.write(name, tensor_to_bytes(w1.to(torch.float32) - w0.to(torch.float32)))
        return w1
