"""The damage guard: measure a patch's harm before anything is written, and stop a broken one.

After the optimization, the live weights' KL on held-out benign prompts (one forward pass) and
their refusal loss are compared with the unpatched model. Past ``--max-damage-kl`` the run stops
with exit 1 and writes nothing, unless ``--force``. So does a patch that leaves the held-out
refusal loss where it was (it would ship the unsafe model under a "patched" name). A default
budget (no ``--rho`` or ``--rho-rel``) that trips either check is refit once: the default is
bounded by both, a ρ the user gave is not.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from .errors import RuntimeFailure

log = logging.getLogger("panacea_patch")

# ρ·sqrt(limit/KL) is where a KL growing with ρ² would meet the limit; the margin keeps the
# estimate under it when the growth is steeper.
FIT_MARGIN = 0.8
# An ineffective default is refit at this share of its ρ: a smaller ρ takes smaller ascent steps,
# which settle where large ones jump about. On SmolLM2's attacked adapter, under the old global
# budget, ρ 1.1 restored safety where 3.3 broke the model or left it unpatched.
INEFFECTIVE_REFIT = 0.5


def guard_verdict(
    figures: dict[str, float | None],
    *,
    rho: float,
    limit: float | None,
    force: bool,
    min_drop: float = 0.0,
) -> dict[str, Any]:
    """The guard's figures plus its decision and, when it trips, a ρ estimated to fit.

    To second order the KL grows with ρ², so ρ·sqrt(limit/KL), with a 20% margin, is the
    suggestion; it is an estimate, which the next run's guard checks again.
    """
    kl = figures.get("heldout_kl")
    tripped = bool(limit) and kl is not None and kl > limit  # type: ignore[operator]
    fit = rho * math.sqrt(limit / kl) * FIT_MARGIN if tripped else None  # type: ignore[operator]
    drop = refusal_drop(figures)
    # --min-refusal-drop 0.1: patches that restored safety on SmolLM2-135M lowered the held-out
    # refusal loss by 66-78%; the one that left 99.5% of harmful requests answered raised it by
    # 2% (docs/RESULTS.md, "Session 6").
    ineffective = bool(min_drop) and drop is not None and drop < min_drop
    return {
        **figures,
        "max_damage_kl": limit or None,
        "refusal_drop": drop,
        "min_refusal_drop": min_drop or None,
        "tripped": tripped,
        "ineffective": ineffective,
        "forced": (tripped or ineffective) and force,
        "rho": rho,
        "rho_that_fits": fit,
    }


def refusal_drop(figures: dict[str, float | None]) -> float | None:
    """1 − r/r₀: how much the patch lowered the held-out refusal loss (None if unmeasured)."""
    after, before = figures.get("heldout_refusal_loss"), figures.get("heldout_refusal_loss_at_0")
    if after is None or before is None or before <= 0:
        return None
    return 1.0 - after / before


def stopped(verdict: dict[str, Any]) -> bool:
    """Whether either check failed (the run stops unless ``--force``)."""
    return bool(verdict["tripped"] or verdict["ineffective"])


def refit_rho(verdict: dict[str, Any]) -> float:
    """The ρ a default budget is refit at: where the KL would fit, or a smaller step."""
    if verdict["tripped"]:
        return float(verdict["rho_that_fits"])
    return float(verdict["rho"]) * INEFFECTIVE_REFIT


def measure(run: Any, rho: float, cfg: Any) -> dict[str, Any]:
    """The verdict on the live (patched) weights of ``run``."""
    return guard_verdict(
        run.damage(),
        rho=rho,
        limit=cfg.max_damage_kl,
        force=cfg.force,
        min_drop=cfg.min_refusal_drop,
    )


def refit(run: Any, first: dict[str, Any], cfg: Any, *, steps: int, bar: Any) -> tuple[Any, dict]:
    """Optimize again at ``refit_rho``; returns (outcome, verdict).

    On SmolLM2's attacked adapter the KL estimate gave the best patch of the real-model bench
    (docs/RESULTS.md), where the default budget had been stopped. The new verdict carries the
    first as ``refit_from``.
    """
    rho = refit_rho(first)
    log.warning(
        "damage guard: the default rho %.4g %s; optimizing again at rho %.4g",
        first["rho"],
        _why(first),
        rho,
    )
    bar.total = bar.n + run.passes_per_run(steps)
    outcome = run.run(rho, progress=bar.update, steps=steps)
    return outcome, {**measure(run, outcome.rho, cfg), "refit_from": first}


def _why(verdict: dict[str, Any]) -> str:
    if verdict["tripped"]:
        return (
            f"gave a held-out benign KL of {verdict['heldout_kl']:.4g} nats/token "
            f"(limit {verdict['max_damage_kl']:g})"
        )
    return (
        f"lowered the held-out refusal loss by {verdict['refusal_drop']:.1%} "
        f"({fmt(verdict['heldout_refusal_loss_at_0'])} -> {fmt(verdict['heldout_refusal_loss'])}; "
        f"at least {verdict['min_refusal_drop']:.0%} is needed)"
    )


def refit_note(verdict: dict[str, Any]) -> str:
    """What the refit did, for ``rho_rule``."""
    first = verdict["refit_from"]
    what = (
        f"measured KL {first['heldout_kl']:.4g}"
        if first["tripped"]
        else f"measured a refusal-loss drop of {first['refusal_drop']:.1%}"
    )
    return f"; refit to {verdict['rho']:.4g} after the damage guard {what} at {first['rho']:.4g}"


def enforce(verdict: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """Stop (exit 1, nothing written) when a check fails, unless ``--force``; returns the
    verdict."""
    refit = verdict.get("refit_from")
    tried = (
        f"; the default rho {refit['rho']:.4g} had been refit to {verdict['rho']:.4g}"
        if refit
        else ""
    )
    if verdict["tripped"] and not cfg.force:
        raise RuntimeFailure(
            f"damage guard: the patched model's KL on held-out benign prompts is "
            f"{verdict['heldout_kl']:.4g} nats/token, above --max-damage-kl "
            f"{cfg.max_damage_kl:g} (refusal loss {fmt(verdict['heldout_refusal_loss'])}, "
            f"{fmt(verdict['heldout_refusal_loss_at_0'])} before){tried}; nothing was written",
            hint=f"rerun with --rho {verdict['rho_that_fits']:.4g} (estimated to fit), "
            "--max-kl, or --force to write it anyway",
        )
    if verdict["ineffective"] and not cfg.force:
        raise RuntimeFailure(
            f"damage guard: the patch did not restore refusals: the rho {verdict['rho']:.4g} "
            f"{_why(verdict)}{tried}; nothing was written",
            hint=f"rerun with a smaller --rho (e.g. {verdict['rho'] * INEFFECTIVE_REFIT:.4g}), "
            "--budget layer, or --force to write it anyway",
        )
    if stopped(verdict):
        log.warning(
            "damage guard: the rho %.4g %s; writing anyway (--force)", verdict["rho"], _why(verdict)
        )
    return verdict


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
