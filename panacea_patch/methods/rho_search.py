"""``--max-kl``: the largest ρ whose held-out benign KL stays under a limit."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import InputError

log = logging.getLogger("panacea_patch")

# Near the start the benign KL grows like ρ² (a smooth loss's second order); the exponent fit
# between two trials is clamped to a range that keeps one bad measurement from leaping far.
KL_EXPONENT = 2.0
EXPONENT_RANGE = (1.0, 4.0)
# Down is safe to leap (a smaller ρ only costs a trial); up is not (it can break the model).
MAX_STEP_UP, MAX_STEP_DOWN = 8.0, 64.0


class Trials(Protocol):
    """What the search needs of a ``PerturbationRun``: a full optimization, and its KL."""

    def run(
        self,
        rho: float | Callable[[float], float],
        progress: Callable[[int], None] | None = None,
        *,
        steps: int | None = None,
    ) -> Any: ...

    def heldout_kl(self) -> float: ...


def search_rho(
    run: Trials,
    max_kl: float,
    *,
    start: float | Callable[[float], float],
    max_trials: int = 10,
    tolerance: float = 0.2,
    steps: int | None = None,
    progress: Callable[[int], None] | None = None,
    before_trial: Callable[[int], None] | None = None,
) -> tuple[float, list[dict[str, float]], Any | None]:
    """Largest ρ whose held-out benign KL ≤ ``max_kl``, by a power-law secant on (ρ, KL).

    Every trial is a full optimization, so trials are what this saves: each next ρ is where the
    KL, fit as c·ρᵖ through the last two trials (p = 2 after one), would reach ``max_kl`` less
    a margin, kept inside the bracket of passing and failing trials. It stops once a passing
    trial's KL is within ``tolerance`` of the limit in ρ terms (KL ≥ (1 − tolerance)² · limit)
    or the bracket is that narrow. ``start`` is the first ρ, or a rule from ‖∇h‖ to ρ.

    ``run`` is a ``PerturbationRun`` (its ``run`` and ``heldout_kl``). Returns the chosen ρ,
    the path of (ρ, KL) trials, and the chosen trial's outcome when it was the last one run
    (its ε is live in the model, so the caller need not optimize again), else None.
    ``before_trial(k)`` is called before the k-th trial (from 1), so a progress bar's total
    can grow with the search instead of overflowing.
    """
    path: list[dict[str, float]] = []
    lo, hi = 0.0, math.inf
    rho: float | Callable[[float], float] = start
    chosen = None
    for trial in range(1, max_trials + 1):
        if before_trial is not None:
            before_trial(trial)
        outcome = run.run(rho, progress, steps=steps)
        rho = float(outcome.rho)
        kl = float(run.heldout_kl())
        ok = kl <= max_kl
        path.append({"rho": rho, "kl": kl, "ok": float(ok)})
        log.info("max-kl search: rho=%.4g kl=%.4g (%s)", rho, kl, "ok" if ok else "over")
        chosen = outcome if ok else None
        if ok:
            lo = max(lo, rho)
        else:
            hi = min(hi, rho)
        near = ok and kl >= max_kl * (1 - tolerance) ** 2
        if near or (lo > 0 and hi < math.inf and (hi - lo) / hi < tolerance):
            break
        rho = _next_rho(path, max_kl * (1 - tolerance / 2) ** 2, lo, hi)
    if lo == 0.0:
        raise InputError(
            f"no rho down to {path[-1]['rho']:.3g} keeps the benign KL <= {max_kl}",
            hint="raise --max-kl or pass an explicit --rho",
        )
    if path[-1]["rho"] != lo:
        chosen = None
    return lo, path, chosen


def _next_rho(path: list[dict[str, float]], aim: float, lo: float, hi: float) -> float:
    """Where c·ρᵖ through the last trials meets ``aim``, clamped into the bracket (lo, hi)."""
    last = path[-1]
    p = KL_EXPONENT
    if len(path) >= 2:
        prev = path[-2]
        if min(prev["kl"], last["kl"]) > 0 and prev["rho"] != last["rho"]:
            p = math.log(last["kl"] / prev["kl"]) / math.log(last["rho"] / prev["rho"])
            p = min(max(p, EXPONENT_RANGE[0]), EXPONENT_RANGE[1])
    ratio = (aim / last["kl"]) ** (1 / p) if last["kl"] > 0 else MAX_STEP_UP
    rho = last["rho"] * min(max(ratio, 1 / MAX_STEP_DOWN), MAX_STEP_UP)
    if not lo < rho < hi:
        # The fit left the bracket (a non-monotone KL): split it instead.
        rho = math.sqrt(lo * hi) if lo > 0 and hi < math.inf else (lo or hi) * (2 if lo else 0.5)
    return rho
