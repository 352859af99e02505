"""Per-tensor statistics of a realized perturbation (what actually landed after rounding)."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import torch

from .kernels.cpu_noise import sumsq_fp32
from .safetensors_io import StreamingWriter, tensor_to_bytes
from .targets import Target

# Elements per step of the norm loop: two fp32 chunks stay in cache.
_CHUNK = 1 << 15


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


_sumsq = sumsq_fp32  # fp32 in cache, float64 where fp32 overflows (e.g. --rho 1e30)


def norms(w0: torch.Tensor, w1: torch.Tensor) -> tuple[float, float]:
    """``(||w1 - w0||, ||w0||)`` with fp32 differences and float64 sums that cannot overflow.

    One pass in cache-sized chunks, no full-size temporary, on torch's thread count for large
    tensors. Chunks start at multiples of the chunk size and parts are added exactly
    (``math.fsum``), so the result does not depend on the thread count.
    """
    a = w0.detach().reshape(-1).cpu()
    b = w1.detach().reshape(-1).cpu()
    n = a.numel()

    def run(lo: int, hi: int) -> tuple[list[float], list[float]]:
        t0, t1 = torch.empty(min(_CHUNK, hi - lo)), torch.empty(min(_CHUNK, hi - lo))
        eps_parts, w_parts = [], []
        for s in range(lo, hi, _CHUNK):
            m = min(_CHUNK, hi - s)
            x0 = t0[:m].copy_(a[s : s + m])
            d = t1[:m].copy_(b[s : s + m]).sub_(x0)
            eps_parts.append(_sumsq(d))
            w_parts.append(_sumsq(x0))
        return eps_parts, w_parts

    chunks = -(-n // _CHUNK)
    workers = min(torch.get_num_threads(), chunks // 4)
    if workers <= 1:
        parts = [run(0, n)]
    else:
        per = -(-chunks // workers) * _CHUNK
        with ThreadPoolExecutor(workers, thread_name_prefix="panacea-norms") as pool:
            parts = list(pool.map(lambda lo: run(lo, min(lo + per, n)), range(0, n, per)))
    eps_sq = math.fsum(x for p in parts for x in p[0])
    w_sq = math.fsum(x for p in parts for x in p[1])
    return math.sqrt(eps_sq), math.sqrt(w_sq)


def tensor_stats(
    target: Target,
    w0: torch.Tensor,
    w1: torch.Tensor,
    measured: tuple[float, float] | None = None,
) -> TensorStats:
    """The stats of one tensor; ``measured`` = (‖w1 − w0‖, ‖w0‖) when already known."""
    norm_eps, norm_w = measured if measured is not None else norms(w0, w1)
    return TensorStats(
        target.name,
        target.layer,
        target.module,
        target.numel,
        norm_eps,
        norm_w,
        rel=norm_eps / norm_w if norm_w else 0.0,
    )


def rho_scale_warning(rho: float | None, stats: list[TensorStats]) -> str | None:
    """A warning when ρ exceeds the norm of the target weights it perturbs, else None."""
    norm_w = math.sqrt(math.fsum(s.norm_w**2 for s in stats))
    if not rho or not stats or rho <= norm_w:
        return None
    ratio = rho / norm_w if norm_w else math.inf
    return (
        f"rho = {rho:.4g} is larger than the norm of the target weights |w| = {norm_w:.4g} "
        f"(rho/|w| = {ratio:.3g}): a perturbation larger than the weights themselves destroys "
        "the model; use a smaller --rho, or --rho-rel (a fraction of |w|)"
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
            # The random method's CPU op measures while it writes (RandomTransform.measured).
            measured = getattr(self.inner, "measured", {}).pop(name, None)
            stats = tensor_stats(self.targets[name], w0, w1, measured)
            self.stats.append(stats)
            if self.delta is not None:
                self.delta.write(name, tensor_to_bytes(w1.to(torch.float32) - w0.to(torch.float32)))
        return w1
