"""``PanaceaTrainer``: the paper's min-max fine-tuning as a ``transformers.Trainer`` subclass.

The service solves ``min_w f(w) − λ·(min(h(w+ε), h_max) − h(w))`` with ``ε = ρ·∇h(w)/‖∇h(w)‖``
(DESIGN.md section 1), treating ε as a constant of each step as the paper does. Each optimizer
step, after the Trainer has accumulated ∇f(w) over its micro-batches:

1. ∇h(w) on one harmful batch (cycled by step number, so a resumed run continues the cycle);
2. ``∇f += λ·∇h(w)`` (folded in now, so ∇h(w)'s buffer can become ε in place);
3. ε = ρ·∇h/‖∇h‖, the global L2 norm over all trainable tensors (``ops.multi_sumsq``);
4. perturb: a saved copy of w, then ``ops.project_apply_`` turns the buffer into ε and writes
   ``w + ε`` into the live parameters;
5. ∇ min(h(w+ε), h_max): no gradient above the cap, so the backward pass is skipped there;
6. restore w from the copy (bit-exact; a fused subtraction of ε cannot be exact in floating
   point), and ``∇f −= λ·∇h(w+ε)``;
7. the Trainer clips and steps its optimizer on ``∇f(w) − λ·(∇h(w+ε) − ∇h(w))``.

Gradient accumulation, mixed precision (autocast and the fp16 loss scaler: the scaled gradients
are combined linearly and ε is scale-free) and accelerate's data-parallel training all go through
the Trainer's own machinery. DeepSpeed and FSDP shard gradients, which this step reads in full:
they are refused.

Memory held beyond a plain Trainer, in units of the trainable parameters: a copy of w for the
exact restore (kept across steps so it is allocated once, in the parameters' dtype), ε (one step,
or kept to the end with ``keep_last_eps``) and ∇h(w+ε) transiently — about 3×, which is small
for LoRA. Activations are those of one forward pass at a time, as in plain training.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import Trainer

from ..data import Batch
from ..errors import InputError
from ..kernels import ops
from ..objectives import capped, response_ce

log = logging.getLogger("panacea_patch")

Grads = list[torch.Tensor | None]
_FUSED_DTYPES = (torch.float32, torch.bfloat16)  # accumulators the fused ops accept


@dataclass(frozen=True)
class PanaceaArguments:
    """The method's own settings (the Trainer's stay in ``TrainingArguments``).

    ``enabled=False`` leaves plain fine-tuning (the no-defence baseline) with the same loop.
    ``keep_last_eps`` keeps the last step's ε for :attr:`PanaceaTrainer.last_eps`.
    """

    rho: float = 1.0
    lam: float = 1e-3
    h_max: float = 5.0
    keep_last_eps: bool = False
    enabled: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rho) and self.rho > 0):
            raise InputError(f"rho must be a finite number > 0, got {self.rho}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise InputError(f"lambda must be a finite number >= 0, got {self.lam}")
        if not self.h_max > 0:
            raise InputError(f"h_max must be > 0, got {self.h_max}")


@dataclass
class StepRecord:
    """What one optimizer step measured. ``h_eps`` is None when ∇h(w) was zero (no ε)."""

    step: int
    f: float
    h: float
    h_eps: float | None
    h_grad_norm: float
    capped: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PanaceaTrainer(Trainer):
    """A ``Trainer`` whose update gradient is ``∇f(w) − λ·(∇h(w+ε) − ∇h(w))``.

    Args:
        harmful_batches: collated harmful batches (``input_ids``, ``attention_mask``, ``labels``
            with -100 off the response), e.g. from ``panacea_patch.data.build_batches``; one
            is used per optimizer step, cycling.
        panacea: ρ, λ, h_max (default: the paper's 1, 0.001, 5).
        *args, **kwargs: as ``transformers.Trainer``.

    After each step :attr:`history` holds a :class:`StepRecord` (and, with ``keep_last_eps``,
    :attr:`last_eps` the step's ε by parameter name, :attr:`last_eps_step` its step); the
    Trainer's log gets the means of ``panacea/f``, ``panacea/h``, ``panacea/h_eps`` and
    ``panacea/h_grad_norm`` since the previous log.
    """

    def __init__(
        self,
        *args: Any,
        harmful_batches: Sequence[Batch] = (),
        panacea: PanaceaArguments | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.panacea = panacea or PanaceaArguments()
        self.harmful_batches = list(harmful_batches)
        if self.panacea.enabled and not self.harmful_batches:
            raise InputError("PanaceaTrainer needs harmful batches", hint="pass harmful_batches=")
        if self.panacea.enabled and (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            raise InputError(
                "PanaceaTrainer reads whole parameter gradients, which DeepSpeed and FSDP shard",
                hint="use single-device or data-parallel (DDP) training",
            )
        self.history: list[StepRecord] = []
        self.last_eps: dict[str, torch.Tensor] | None = None
        self.last_eps_step: int | None = None
        self._pending: list[StepRecord] = []
        self._f_step = 0.0
        self._backup: dict[str, torch.Tensor] = {}
        self._params: list[tuple[str, torch.nn.Parameter]] | None = None
        self._warned: set[str] = set()

    # --- the step -----------------------------------------------------------------------------

    def training_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """The Trainer's step (∇f accumulates), plus the Panacea correction on the last
        micro-batch of each optimizer step, once ∇f is complete."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._f_step += float(loss)
        if self.accelerator.sync_gradients:
            f, self._f_step = self._f_step, 0.0
            if self.panacea.enabled:
                self._record(self._correct(model), f)
        return loss

    def _correct(self, model: torch.nn.Module) -> dict[str, Any]:
        """Turn the accumulated ∇f into ∇f − λ·(∇h(w+ε) − ∇h(w)); returns what it measured."""
        params = self._trainable()
        grads = _take_grads(params)
        batch = self._prepare_inputs(dict(self._harmful_batch()))
        h, h_grads = self._harmful_grad(model, batch, params, cap=None)
        present = [g.contiguous() for g in h_grads if g is not None]  # a no-op when contiguous
        norm = math.sqrt(float(ops.multi_sumsq(present))) if present else 0.0
        out: dict[str, Any] = {"h": h, "h_grad_norm": norm, "h_eps": None, "capped": False}
        if not (math.isfinite(norm) and norm > 0):
            self._warn_once("grad", f"|grad h| = {norm}: this step has no perturbation")
            _give_grads(params, grads)
            return out
        lam = self.panacea.lam
        grads = [
            _axpy(gf, gh, lam, p) for gf, gh, (_, p) in zip(grads, h_grads, params, strict=True)
        ]
        eps = [_as_eps(g) for g in h_grads]
        del h_grads
        self._perturb(params, eps, self.panacea.rho / norm)
        try:
            h_eps, eps_grads = self._harmful_grad(model, batch, params, cap=self.panacea.h_max)
        finally:
            self._restore(params, eps)
        grads = [
            _axpy(gf, g, -lam, p) for gf, g, (_, p) in zip(grads, eps_grads, params, strict=True)
        ]
        _give_grads(params, grads)
        if self.panacea.keep_last_eps:
            self.last_eps = {n: e for (n, _), e in zip(params, eps, strict=True) if e is not None}
            self.last_eps_step = self.state.global_step + 1
        out.update(h_eps=h_eps, capped=not h_eps < self.panacea.h_max)
        return out

    def _harmful_grad(
        self,
        model: torch.nn.Module,
        batch: Batch,
        params: list[tuple[str, torch.nn.Parameter]],
        *,
        cap: float | None,
    ) -> tuple[float, Grads]:
        """h on ``batch`` and its gradient (min(h, cap) when capped), taken off the params."""
        with self.compute_loss_context_manager():
            h = response_ce(model, batch)
        value = float(h.detach())
        over = cap is not None and not value < cap  # also catches NaN: treated as capped
        # Above the cap the gradient is exactly zero; skip the backward pass, except under
        # data parallelism, where every rank must join the same gradient all-reduce.
        if over and self.accelerator.num_processes == 1:
            if not math.isfinite(value):
                self._warn_once("h_eps", f"h(w+eps) = {value}: no gradient taken from it")
            return value, [None] * len(params)
        self.accelerator.backward(capped(h, cap) if cap is not None else h)
        return value, _take_grads(params)

    # --- perturb and restore ------------------------------------------------------------------

    def _perturb(
        self, params: list[tuple[str, torch.nn.Parameter]], eps: Grads, scale: float
    ) -> None:
        """Save w, then one fused pass per tensor: ``eps *= scale``; ``w = w_saved + eps``."""
        with torch.no_grad():
            for (name, p), e in zip(params, eps, strict=True):
                if e is None:
                    continue  # no gradient from h: ε is zero there and w stays as it is
                saved = self._backup.get(name)
                if saved is None:
                    saved = self._backup[name] = torch.empty_like(
                        p, memory_format=torch.contiguous_format
                    )
                saved.copy_(p.detach())
                ops.project_apply_(e, saved, p.data, scale)

    def _restore(self, params: list[tuple[str, torch.nn.Parameter]], eps: Grads) -> None:
        """Put back exactly the saved w wherever ε was applied."""
        with torch.no_grad():
            for (name, p), e in zip(params, eps, strict=True):
                if e is not None:
                    p.data.copy_(self._backup[name])

    # --- bookkeeping --------------------------------------------------------------------------

    def _trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        if self._params is None:
            model = self.accelerator.unwrap_model(self.model)
            self._params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        return self._params

    def _harmful_batch(self) -> Batch:
        return self.harmful_batches[self.state.global_step % len(self.harmful_batches)]

    def _record(self, measured: dict[str, Any], f: float) -> None:
        rec = StepRecord(step=self.state.global_step + 1, f=f, **measured)
        self.history.append(rec)
        self._pending.append(rec)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s (step %d; reported once)", message, self.state.global_step + 1)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the Panacea figures (means since the last log) to the training logs."""
        if self._pending and "loss" in logs:
            logs.update(summarize(self._pending))
            self._pending = []
        super().log(logs, start_time)


def summarize(records: Sequence[StepRecord]) -> dict[str, float]:
    """Means of f, h(w), h(w+ε), ‖∇h‖ over ``records`` (h(w+ε) over the steps that had ε)."""
    n = len(records)
    out = {
        "panacea/f": sum(r.f for r in records) / n,
        "panacea/h": sum(r.h for r in records) / n,
        "panacea/h_grad_norm": sum(r.h_grad_norm for r in records) / n,
    }
    perturbed = [r.h_eps for r in records if r.h_eps is not None]
    if perturbed:
        out["panacea/h_eps"] = sum(perturbed) / len(perturbed)
    return out


def _take_grads(params: list[tuple[str, torch.nn.Parameter]]) -> Grads:
    """The params' gradients, detached from them (so the next backward starts from None)."""
    grads: Grads = []
    for _, p in params:
        grads.append(p.grad)
        p.grad = None
    return grads


def _give_grads(params: list[tuple[str, torch.nn.Parameter]], grads: Grads) -> None:
    for (_, p), g in zip(params, grads, strict=True):
        p.grad = g


def _axpy(
    y: torch.Tensor | None, x: torch.Tensor | None, a: float, like: torch.Tensor
) -> torch.Tensor | None:
    """``y += a·x`` in place (a new zero ``y`` when None), through the fused op where it can."""
    if x is None:
        return y
    if y is None:
        y = torch.zeros_like(like, memory_format=torch.contiguous_format)
    if y.dtype in _FUSED_DTYPES and y.is_contiguous() and x.is_contiguous():
        ops.pgd_step_(y, x, a)
    else:  # fp16 or strided gradients: the fused op refuses them rather than copy silently
        y.add_(x.to(y.dtype), alpha=a)
    return y


def _as_eps(g: torch.Tensor | None) -> torch.Tensor | None:
    """∇h(w)'s buffer, reused as ε where the fused ops accept it (else an fp32 copy)."""
    if g is None or (g.dtype in _FUSED_DTYPES and g.is_contiguous()):
        return g
    return g.float().contiguous()
