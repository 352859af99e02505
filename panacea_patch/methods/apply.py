"""Transforms that write w' = round(w + ε) for the streaming writer."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..kernels import ops

Transform = Callable[[str, torch.Tensor], "torch.Tensor | None"]


class EpsTransform:
    """Adds an optimized ε (fp32, by tensor name) to the stored weights with the chosen rounding."""

    def __init__(
        self,
        eps: dict[str, torch.Tensor],
        *,
        rounding: str = "nearest",
        seed: int = 0,
        offsets: dict[str, int] | None = None,
    ) -> None:
        self.eps = eps
        self.rounding = rounding
        self.seed = seed
        self.offsets = offsets or {}

    def __call__(self, name: str, w0: torch.Tensor) -> torch.Tensor | None:
        e = self.eps.get(name)
        if e is None:
            return None
        # scale=1 leaves ε itself unchanged; the op does the add and the rounding in one pass.
        e = e.detach().to("cpu").contiguous()
        out = torch.empty_like(w0)
        ops.project_apply_(
            e,
            w0,
            out,
            1.0,
            rounding=self.rounding,
            seed=self.seed,
            offset=self.offsets.get(name, 0),
        )
        return out


class MergedBase:
    """For ``--merge-adapter``: the merged weights stand in for the base checkpoint's tensors.

    Merged tensors are first rounded to the stored dtype, then perturbed by ``inner``; tensors the
    merge left unchanged are copied byte for byte.
    """

    def __init__(self, inner: Transform, merged: dict[str, torch.Tensor]) -> None:
        self.inner = inner
        self.merged = merged

    def __call__(self, name: str, w_file: torch.Tensor) -> torch.Tensor | None:
        w = self.merged.get(name)
        if w is None:
            return self.inner(name, w_file)
        w = w.detach().to("cpu", w_file.dtype).contiguous()
        changed = self.inner(name, w)
        if changed is not None:
            return changed
        return None if torch.equal(w, w_file) else w
