"""The damage guard: measure a patch's harm before anything is written, and stop a broken one.

After the optimization, the live weights' KL on held-out benign prompts (one forward pass) and
their refusal loss are compared with the unpatched model. Past ``--max-damage-kl`` the run stops
with exit 1 and writes nothing, unless ``--force``. A default budget (no ``--rho`` or
``--rho-rel``) that trips it is refit once at the ρ the guard estimates to fit: the default is
KL-bounded, a ρ the user gave is not.
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


def guard_verdict(
    figures: dict[str, float | None], *, rho: float, limit: float | None, force: bool
) -> dict[str, Any]:
    """The guard's figures plus its decision and, when it trips, a ρ estimated to fit.

    To second order the KL grows with ρ², so ρ·sqrt(limit/KL), with a 20% margin, is the
    suggestion; it is an estimate, which the next run's guard checks again.
    """
    kl = figures.get("heldout_kl")
    tripped = bool(limit) and kl is not None and kl > limit  # type: ignore[operator]
    fit = rho * math.sqrt(limit / kl) * FIT_MARGIN if tripped else None  # type: ignore[operator]
    return {
        **figures,
        "max_damage_kl": limit or None,
        "tripped": tripped,
        "forced": tripped and force,
        "rho": rho,
        "rho_that_fits": fit,
    }


def measure(run: Any, rho: float, cfg: Any) -> dict[str, Any]:
    """The verdict on the live (patched) weights of ``run``."""
    return guard_verdict(run.damage(), rho=rho, limit=cfg.max_damage_kl, force=cfg.force)


def refit(run: Any, first: dict[str, Any], cfg: Any, *, steps: int, bar: Any) -> tuple[Any, dict]:
    """Optimize again at the ρ the first verdict estimated to fit; returns (outcome, verdict).

    On SmolLM2's attacked adapter the estimate gave the best patch of the real-model bench
    (docs/RESULTS.md), where the default budget had been stopped. The new verdict carries the
    first as ``refit_from``.
    """
    rho = first["rho_that_fits"]
    log.warning(
        "damage guard: the default rho %.4g gave a held-out benign KL of %.4g nats/token "
        "(limit %g); optimizing again at rho %.4g",
        first["rho"],
        first["heldout_kl"],
        first["max_damage_kl"],
        rho,
    )
    bar.total = bar.n + run.passes_per_run(steps)
    outcome = run.run(rho, progress=bar.update, steps=steps)
    return outcome, {**measure(run, outcome.rho, cfg), "refit_from": first}


def refit_note(verdict: dict[str, Any]) -> str:
    """What the refit did, for ``rho_rule``."""
    first = verdict["refit_from"]
    return (
        f"; refit to {verdict['rho']:.4g} after the damage guard measured KL "
        f"{first['heldout_kl']:.4g} at {first['rho']:.4g}"
    )


def enforce(verdict: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """Stop (exit 1, nothing written) past the limit unless ``--force``; returns the verdict."""
    if verdict["tripped"] and not cfg.force:
        refit = verdict.get("refit_from")
        tried = (
            f"; the default rho {refit['rho']:.4g} had been refit to {verdict['rho']:.4g}"
            if refit
            else ""
        )
        raise RuntimeFailure(
            f"damage guard: the patched model's KL on held-out benign prompts is "
            f"{verdict['heldout_kl']:.4g} nats/token, above --max-damage-kl "
            f"{cfg.max_damage_kl:g} (refusal loss {fmt(verdict['heldout_refusal_loss'])}, "
            f"{fmt(verdict['heldout_refusal_loss_at_0'])} before){tried}; nothing was written",
            hint=f"rerun with --rho {verdict['rho_that_fits']:.4g} (estimated to fit), "
            "--max-kl, or --force to write it anyway",
        )
    if verdict["tripped"]:
        log.warning(
            "damage guard tripped (KL %.4g); writing anyway (--force)", verdict["heldout_kl"]
        )
    return verdict


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
