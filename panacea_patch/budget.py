"""Budget rules: how large ρ is by default, and how many ascent steps a run makes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .checkpoint import ShardReader
from .errors import InputError
from .source import ResolvedSource, resolve_source
from .targets import Target

# The default budget of a full model whose base is known: this share of ‖w − w_base‖ (the
# organism's calibrated 0.1·‖w‖ is 0.59 of its attack's delta).
DELTA_SHARE = 0.6
# Without a base: the first-order rise of h, in nats, that the default ρ buys (calibrated on
# SmolLM2-135M-Instruct's development data, docs/RESULTS.md "Recalibration for real models":
# 2 nats left 16% of harmful requests answered, 3 nats 7%, with the answer-head KL on).
RISE = 3.0
# Default ascent length. A budget from the weights' scale (rho_rel, an adapter's norm, the
# fine-tuning delta) starts the ascent far from the model (+16 nats on the organism) and gets
# the 60 steps the organism was calibrated with; a start chosen by RISE is mild by construction
# and gets RISE_STEPS (calibrated on SmolLM2-135M's development data: with the answer KL at
# weight 4, 30 steps left 5% of harmful requests answered where 20 left 11%).
DEFAULT_STEPS, RISE_STEPS = 60, 30
# Default weight of the answer KL in u (objectives.BenignReference). Without it, refusals spread
# to SmolLM2's benign prompts (22% of held-out ones over-refused; on development data 7.9% at
# weight 1, 4.6% at weight 2, 2.8% at weight 4 with 30 steps); with it on the demo organism,
# whose budget is a share of its known fine-tuning delta, the harmful score rose by 2-4 points.
# So it is off when the default budget is a share of a full model's known delta (--base-model,
# a merged adapter) and on otherwise, LoRA adapters included: on SmolLM2's attacked adapter the
# default without it over-refused 15.9% (with it, at a similar rho, 0.9%), and on the organism's
# adapters it left the harmful score as it was or lower (docs/RESULTS.md, "Session 4").
ANSWER_KL_WEIGHT = 4.0
# The default budget turns per tensor when one ball's closed-form start would move a tensor by
# more than this many times its own norm (choose_budget).
OVERWRITE = 1.0


@dataclass
class RiseRule:
    """ρ = RISE / ‖∇h‖, at most ``cap``: applied once the closed form has measured ‖∇h‖."""

    cap: float
    capped: bool = False

    def __call__(self, grad_norm: float) -> float:
        rise = RISE / max(grad_norm, 1e-12)
        self.capped = rise >= self.cap
        return min(rise, self.cap)


def choose_budget(
    rho: float, grad_sq: dict[str, float], w_norms: dict[str, float]
) -> tuple[str, dict[str, Any]]:
    """The default budget: one ball over all targets ('global'), unless the closed-form start
    ε = ρ·∇h/‖∇h‖ in that ball would move some tensor by more than OVERWRITE times its own norm;
    then each tensor gets its own share, ‖ε_t‖ ≤ ρ·‖w_t‖/‖w‖ ('layer').

    Such a start no longer perturbs the tensor, it replaces it. On SmolLM2's attacked adapter
    the start would move v_proj's B matrices by up to 2.2× their norm (53% of ‖∇h‖² in tensors
    past 1×); one ball then put ε at 4.8× a B matrix's norm and the ascent never settled, where
    per-tensor shares gave the best adapter patch measured. On the organism's adapters the
    largest start is 0.28–0.37× (nine attacked adapters), and one ball is what keeps their
    harmful score and over-refusal (per-tensor shares cost up to 16 points of HS there); on
    SmolLM2's merged model it is 0.011× (docs/RESULTS.md, "Session 8").
    """
    gnorm = math.sqrt(sum(grad_sq.values())) or 1.0
    ratios = {n: rho * math.sqrt(g) / gnorm / max(w_norms[n], 1e-30) for n, g in grad_sq.items()}
    worst = max(ratios, key=ratios.__getitem__)
    check = {"max_start_ratio": ratios[worst], "tensor": worst, "limit": OVERWRITE}
    return ("layer" if ratios[worst] > OVERWRITE else "global"), check


def budget_note(state: Any, rho: float, target_norm: float) -> str:
    """What ``rho_rule`` adds for a per-tensor budget: the share, and why when it was chosen."""
    if state.budget != "layer":
        return ""
    note = f", at most {rho / max(target_norm, 1e-30):.3g} x |w_t| per tensor"
    check = state.budget_check
    if check is not None:
        note += (
            f" (in one ball the start would move {check['tensor']} by "
            f"{check['max_start_ratio']:.2g}x its norm)"
        )
    return note


def max_steps(steps: int | None) -> int:
    """The most ascent steps a run can make (``steps`` None is the automatic default)."""
    return DEFAULT_STEPS if steps is None else steps


def rise_rule_applies(cfg: Any, *, kind: str, merged: bool) -> bool:
    """Whether the default ρ is the rise rule: no ρ given and no fine-tuning delta known
    (an adapter, a merged adapter, or ``--base-model``); README, "How large a perturbation"."""
    given = cfg.rho_rel is not None or (cfg.rho is not None and cfg.max_kl is None)
    delta_known = kind == "adapter" or merged or (kind == "full" and bool(cfg.base_model))
    return not given and not delta_known


def planned_steps(cfg: Any, *, kind: str, merged: bool) -> int:
    """The ascent steps a run makes, early stopping aside: ``--steps``, else the rise rule's
    RISE_STEPS or DEFAULT_STEPS."""
    if cfg.steps is not None:
        return cfg.steps
    return RISE_STEPS if rise_rule_applies(cfg, kind=kind, merged=merged) else DEFAULT_STEPS


def delta_norm(
    src: ResolvedSource,
    base_model: str | None,
    merged: dict[str, Any],
    targets: list[Target],
    token: str | None,
) -> float | None:
    """‖w − w_base‖ of a full model with a known base (``--base-model``), else None.

    A merged adapter (``merged`` holds its weights, ``src`` is its base) measures the adapter's
    own delta.
    """
    if merged:
        with ShardReader(src) as base:
            return finetune_delta_norm(lambda n: merged[n], base, targets, "base")
    if src.kind != "full" or not base_model:
        return None
    base_src = resolve_source(base_model, token=token)
    with ShardReader(src) as mine, ShardReader(base_src) as base:
        return finetune_delta_norm(mine.get, base, targets, base_model)


def finetune_delta_norm(
    weights: Any, base: ShardReader, targets: list[Target], base_name: str
) -> float:
    """‖w − w_base‖ over the targets, one tensor at a time (``weights(name)`` gives w)."""
    known = base.infos()
    total = 0.0
    for t in targets:
        if t.name not in known or tuple(known[t.name].shape) != tuple(t.shape):
            raise InputError(
                f"--base-model {base_name} has no tensor {t.name!r} of shape {tuple(t.shape)}",
                hint="pass the model this checkpoint was fine-tuned from, or --rho-rel",
            )
        diff = weights(t.name).detach().double().cpu() - base.get(t.name).double()
        total += float(diff.pow(2).sum())
    return math.sqrt(total)
