"""The closed form ε* = ρ·∇h/‖∇h‖ and Panacea's normalized projected gradient ascent on J.

Memory: we hold the original target weights w₀, ε (fp32) and the live weights, and never a full
gradient copy. Each target parameter has a post-accumulate-grad hook that folds its gradient into
ε with ``pgd_step_`` as soon as backward produces it, then frees it.

A global-norm step needs ‖g‖ over every tensor, which is only known once backward finishes. We
reconcile this as follows:
- closed form: the hook adds the raw gradient (ε += g); the global norm is read afterwards from
  the Σε² that ``pgd_step_`` returns, and ``project_apply_`` rescales ε to ρ in a second cheap
  pass that also writes the live weights;
- Panacea, global budget: step k is normalized by the exact global gradient norm of step k−1
  (measured in the same hooks; step 0 uses ‖∇h‖ from the closed form). The projection onto the
  ρ-ball afterwards is exact, so the lag only affects the effective step length;
- Panacea, layer budget: each tensor's step is normalized by its own gradient norm, which the
  hook knows exactly, and each tensor is projected onto its own ball.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..budget import choose_budget
from ..errors import RuntimeFailure
from ..kernels import ops
from ..objectives import Objective, response_ce, to_device

log = logging.getLogger("panacea_patch")


class PerturbationState:
    """w₀, ε (fp32) and the live parameters of the target set."""

    def __init__(
        self,
        params: dict[str, torch.nn.Parameter],
        *,
        budget: str,
        rho: float,
        stored_dtypes: dict[str, torch.dtype] | None = None,
        model: torch.nn.Module | None = None,
        offload_w0: bool = False,
    ) -> None:
        from . import live

        self.params = params
        # w₀ is kept in the checkpoint's stored dtype: exact (the live copy was upcast from it)
        # and half the memory of an fp32 copy for bf16/fp16 checkpoints. Given the model, the
        # live weights of nn.Linear targets are rebuilt from w₀ + ε per module (methods/live.py)
        # instead of being held; with ``offload_w0``, w₀ lives in (pinned) host memory and is
        # streamed per tensor at projection time, and the live weights stay persistent.
        stored = stored_dtypes or {}
        self.offload_w0 = offload_w0
        use = model is not None and not offload_w0 and live.enabled()
        owners = live.eligible_owners(model, params) if use else {}  # type: ignore[arg-type]
        self.w0: dict[str, torch.Tensor] = {}
        self.eps: dict[str, torch.Tensor] = {}
        for n, p in params.items():
            # One tensor at a time, freeing its live copy first: the peak stays near the end state.
            self.w0[n] = self._keep_w0(p, stored.get(n, p.dtype), on_demand=n in owners)
            if n in owners:
                p.data = live.placeholder(p)
            self.eps[n] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
        self.live = live.OnDemandWeights(self, owners) if owners else None
        # 'auto' until the first closed form measures ∇h (budget.choose_budget), then kept.
        self.budget = budget
        self.budget_check: dict[str, Any] | None = None
        self.rho = rho
        self.w_norms = {n: math.sqrt(float(ops.multi_sumsq([w]))) for n, w in self.w0.items()}
        bad = [n for n, v in self.w_norms.items() if not math.isfinite(v)]
        if bad:
            raise RuntimeFailure(
                f"weight tensor {bad[0]!r} contains NaN or inf", hint="check the checkpoint"
            )
        total = math.sqrt(sum(v * v for v in self.w_norms.values())) or 1.0
        # Layer budget: ρ_t ∝ ‖w_t‖ with Σρ_t² = ρ², so the whole ε still satisfies ‖ε‖ ≤ ρ.
        self.rho_t = {n: rho * v / total for n, v in self.w_norms.items()}

    def set_rho(self, rho: float) -> None:
        """A new global budget ρ (and the layer budget's shares, ρ_t ∝ ‖w_t‖)."""
        total = math.sqrt(sum(v * v for v in self.w_norms.values())) or 1.0
        self.rho = rho
        self.rho_t = {n: rho * v / total for n, v in self.w_norms.items()}

    def project(self, eps_sq: dict[str, float], *, exact: bool = False) -> float:
        """Project ε onto the budget (exact=True scales onto the sphere), write live weights.

        Returns the resulting ‖ε‖₂.
        """
        if self.budget == "layer":
            scales = {n: self._scale(self.rho_t[n], sq, exact) for n, sq in eps_sq.items()}
        else:
            s = self._scale(self.rho, sum(eps_sq.values()), exact)
            scales = dict.fromkeys(eps_sq, s)
        for n, s in scales.items():
            self._apply(n, s)
        return math.sqrt(sum(sq * scales[n] ** 2 for n, sq in eps_sq.items()))

    def scale(self, factor: float) -> None:
        """ε ← factor·ε, the live weights following (``--max-kl``'s probes)."""
        for n in self.eps:
            self._apply(n, factor)

    @staticmethod
    def _scale(radius: float, sq: float, exact: bool) -> float:
        norm = math.sqrt(sq)
        if norm == 0.0:
            return 0.0
        return radius / norm if exact or norm > radius else 1.0

    def _keep_w0(self, p: torch.Tensor, dtype: torch.dtype, *, on_demand: bool) -> torch.Tensor:
        if self.offload_w0:
            host = torch.empty(
                p.shape, dtype=dtype, pin_memory=p.device.type == "cuda" and _can_pin()
            )
            return host.copy_(p.detach())
        # On demand, w₀ may take over the live tensor's storage when the dtypes agree.
        return p.detach().to(dtype, copy=not on_demand)

    def _apply(self, name: str, scale: float) -> None:
        live = self.live
        if live is not None and name in live.dtypes:
            # The live weight is rebuilt from w₀ + ε when its module runs: only scale ε here
            # (the bits project_apply_ would give ε, and the rebuild gives the same w₀ + ε).
            if scale != 1.0:
                self.eps[name].mul_(scale)
            live.at_w0.discard(name)
            return
        w0 = self.w0[name]
        if self.offload_w0:
            w0 = w0.to(self.eps[name].device, copy=True, non_blocking=True)  # streamed per tensor
        ops.project_apply_(self.eps[name], w0, self.params[name].data, scale)

    def restore(self, *, persistent: bool = False) -> None:
        """Live weights back to w₀ (``persistent``: as plain tensors again, e.g. for evaluation)."""
        if self.live is not None:
            self.live.at_w0.update(self.live.names)
            if persistent:
                self.live.persist()
                self.live = None
        for n, p in self.params.items():
            if self.live is None or n not in self.live.dtypes:
                p.data.copy_(self.w0[n])


@dataclass
class GradSink:
    """Post-accumulate-grad hooks that fold each gradient into ε and free it.

    Sums of squares stay 0-d tensors until ``floats`` reads them all at once, so on a GPU the
    hooks add no per-tensor device synchronisation (except the layer budget's per-tensor norm).
    """

    state: PerturbationState
    coef: Callable[[str, torch.Tensor], float] = lambda name, gsq: 1.0
    grad_sq: dict[str, torch.Tensor] = field(default_factory=dict)
    eps_sq: dict[str, torch.Tensor] = field(default_factory=dict)
    # False while a step's earlier shares run backward: their gradients stay in .grad and the
    # last share's backward folds the sum (so the step's gradient norm is that of the sum).
    armed: bool = True
    _handles: list = field(default_factory=list)

    def __enter__(self) -> GradSink:
        for name, p in self.state.params.items():
            self._handles.append(p.register_post_accumulate_grad_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        for p in self.state.params.values():
            p.grad = None

    def _hook(self, name: str) -> Callable[[torch.Tensor], None]:
        def fold(p: torch.Tensor) -> None:
            if not self.armed:
                return
            g = p.grad
            gsq = ops.multi_sumsq([g])
            self.grad_sq[name] = self.grad_sq[name] + gsq if name in self.grad_sq else gsq
            self.eps_sq[name] = ops.pgd_step_(self.state.eps[name], g, self.coef(name, gsq))
            p.grad = None

        return fold

    @staticmethod
    def floats(values: dict[str, torch.Tensor]) -> dict[str, float]:
        if not values:
            return {}
        flat = torch.stack([v.detach().float().cpu() for v in values.values()]).tolist()
        return dict(zip(values, flat, strict=True))

    def check_finite(self, where: str) -> tuple[dict[str, float], dict[str, float]]:
        """(Σg², Σε²) per tensor as floats; raises naming the first tensor that is not finite."""
        grad_sq, eps_sq = self.floats(self.grad_sq), self.floats(self.eps_sq)
        for name, v in {**grad_sq, **eps_sq}.items():
            if not math.isfinite(v):
                raise RuntimeFailure(
                    f"{where}: the gradient of tensor {name!r} is NaN or inf; nothing was written",
                    hint="lower --rho / --step-size, use --dtype float32, or check the data",
                )
        return grad_sq, eps_sq

    def missing(self) -> list[str]:
        return [n for n in self.state.params if n not in self.eps_sq]


def _can_pin() -> bool:
    return torch.cuda.is_available()


def _check_loss(value: torch.Tensor, where: str) -> None:
    if not torch.isfinite(value):
        raise RuntimeFailure(
            f"{where} is {float(value)}; nothing was written",
            hint="check the data and the model, or use --dtype float32",
        )


def closed_form(
    state: PerturbationState,
    model: torch.nn.Module,
    harmful: Sequence[dict],
    *,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
    rho_rule: Callable[[float], float] | None = None,
) -> dict[str, Any]:
    """Set ε = ρ·∇h/‖∇h‖ (h over all harmful batches); returns per-tensor ‖∇h_t‖² shares etc.

    ``rho_rule`` maps ‖∇h‖ to ρ, for budgets defined by the loss change rather than by norm.
    """
    sizes = [int((b["labels"][:, 1:] != -100).sum()) for b in harmful]
    total = max(sum(sizes), 1)
    for e in state.eps.values():
        e.zero_()
    h_sum = 0.0
    with GradSink(state) as sink:
        for i, (batch, n) in enumerate(zip(harmful, sizes, strict=True)):
            h = response_ce(model, to_device(batch, device))
            _check_loss(h, f"harmful loss h on batch {i}")
            h_sum += float(h.detach()) * n
            # Token-weighted, so the accumulated ε is the gradient of the mean over all tokens.
            # No cap here: ε* is the paper's ∇h at w; the cap belongs to the ascent objective.
            (h * (n / total)).backward()
            if progress:
                progress(1)
        _, grad_sq = sink.check_finite("closed form")
        missing = sink.missing()
        if missing:
            raise RuntimeFailure(
                f"target tensor {missing[0]!r} received no gradient from the harmful loss",
                hint="choose --targets that take part in the forward pass",
            )
    gnorm = math.sqrt(sum(grad_sq.values()))
    if gnorm == 0.0:
        raise RuntimeFailure(
            "the harmful-loss gradient is exactly zero",
            hint="check that the harmful data has response tokens and the targets are used",
        )
    if rho_rule is not None:
        state.set_rho(rho_rule(gnorm))
    if state.budget == "auto":
        state.budget, state.budget_check = choose_budget(state.rho, grad_sq, state.w_norms)
    state.project(grad_sq, exact=True)
    return {
        "grad_norm": gnorm,
        "h": h_sum / total,
        "grad_share": {n: v / gnorm**2 for n, v in grad_sq.items()},
    }


def cosine_step(k: int, steps: int, base: float) -> float:
    """Step size for step k: cosine decay from ``base`` to 10% of it."""
    if steps <= 1:
        return base
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / (steps - 1))))


def panacea_ascent(
    state: PerturbationState,
    model: torch.nn.Module,
    objective: Objective,
    *,
    steps: int,
    step_size: float,
    init_grad_norm: float,
    patience: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """Up to K steps of normalized projected gradient ascent on J, from the current ε.

    With ``patience``, stops once the smoothed J has not improved for that many steps.
    """
    history: list[dict[str, float]] = []
    prev_norm = init_grad_norm
    stopper = EarlyStop(patience) if patience else None
    for k in range(steps):
        eta = cosine_step(k, steps, step_size)
        if state.budget == "layer":
            coef = _layer_coef(state, eta)
        else:
            coef = _global_coef(eta * state.rho / max(prev_norm, 1e-30))
        with GradSink(state, coef=coef) as sink:

            def backward(share: torch.Tensor, last: bool, k: int = k) -> None:
                _check_loss(share, f"step {k}: objective J")
                # Gradients accumulate over the shares; the last one folds their sum into ε.
                sink.armed = last
                share.backward()

            terms = objective.terms(model, k, backward=backward)
            grad_sq, eps_sq = sink.check_finite(f"step {k}")
            prev_norm = math.sqrt(sum(grad_sq.values()))
        norm = state.project(eps_sq)
        record = {key: float(v.detach()) for key, v in terms.items()}
        record.update(step=k, eta=eta, grad_norm=prev_norm, eps_norm=norm)
        history.append(record)
        log.info(
            "step %d: %s", k, " ".join(f"{a}={b:.4g}" for a, b in record.items() if a != "step")
        )
        if progress:
            progress(objective.passes_per_step())
        if stopper is not None and stopper.stop(record["J"]):
            log.info("early stop after step %d: J has not improved for %d steps", k, patience)
            break
    return history


class EarlyStop:
    """Stop once an exponential moving average of J has not improved for ``patience`` steps.

    Each step scores J on a different batch, so the raw values are noisy; the average over
    roughly the last five steps is what has to keep rising.
    """

    def __init__(self, patience: int, decay: float = 0.8) -> None:
        self.patience, self.decay = patience, decay
        self.avg: float | None = None
        self.best = -math.inf
        self.since_best = 0

    def stop(self, value: float) -> bool:
        self.avg = value if self.avg is None else self.decay * self.avg + (1 - self.decay) * value
        if self.avg > self.best:
            self.best, self.since_best = self.avg, 0
        else:
            self.since_best += 1
        return self.since_best >= self.patience


def _global_coef(c: float) -> Callable[[str, torch.Tensor], float]:
    def coef(name: str, gsq: torch.Tensor) -> float:
        return c

    return coef


def _layer_coef(state: PerturbationState, eta: float) -> Callable[[str, torch.Tensor], float]:
    def coef(name: str, gsq: torch.Tensor) -> float:
        return eta * state.rho_t[name] / max(math.sqrt(float(gsq)), 1e-30)

    return coef
