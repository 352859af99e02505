"""``--max-kl``: the largest ρ whose held-out benign KL stays under a limit, in two optimizations.

A trial (a full optimization) costs a few hundred passes; scaling a trial's ε and measuring the
held-out KL costs one forward pass per held-out batch. So the search optimizes once where the
default budget is, scales that ε to find where the KL meets the limit (probes), optimizes once
more at the ρ the probes point to, and, should that second ε overshoot, scales it back under the
limit. On SmolLM2's attacked model the old secant over full trials needed five optimizations
(docs/RESULTS.md, "Session 7"); this needs two at most.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import InputError

log = logging.getLogger("panacea_patch")

# Near the start the benign KL grows like t² (a smooth loss's second order); the exponent fit
# between two measurements is clamped to a range that keeps one bad measurement from leaping far.
KL_EXPONENT = 2.0
EXPONENT_RANGE = (1.0, 4.0)
# Down is safe to leap (a smaller ε only costs a probe); up is not (it can break the model).
MAX_STEP_UP, MAX_STEP_DOWN = 8.0, 64.0
# Probes are cheap but not free: this many per scaling, after which the best fitting scale found
# stands (a KL that is not monotone in the scale would otherwise keep the search going).
MAX_PROBES = 10
# The smallest scale of a trial's ε tried before concluding that no ρ fits.
MIN_SCALE = 1e-4


class Trials(Protocol):
    """What the search needs of a ``PerturbationRun``: a full optimization, its KL, and scaling
    its ε (``scale_eps(f)``: ε ← f·ε, live weights follow)."""

    def run(
        self,
        rho: float | Callable[[float], float],
        progress: Callable[[int], None] | None = None,
        *,
        steps: int | None = None,
    ) -> Any: ...

    def heldout_kl(self) -> float: ...

    def scale_eps(self, factor: float) -> None: ...


def search_rho(
    run: Trials,
    max_kl: float,
    *,
    start: float | Callable[[float], float],
    tolerance: float = 0.2,
    steps: int | None = None,
    progress: Callable[[int], None] | None = None,
    before_trial: Callable[[int], None] | None = None,
) -> tuple[float, list[dict[str, float]], Any]:
    """A ρ whose held-out benign KL ≤ ``max_kl``, aiming within ``tolerance`` of the largest.

    The first trial stands when its KL is already within ``tolerance`` of the limit in ρ terms;
    a passing second trial stands as it is (the probes aimed it, it is not searched further).
    ``start`` is the first trial's ρ, or a rule from ‖∇h‖ to ρ. Returns the chosen ρ, the path
    of measurements (trials, and probes marked ``"probe": 1``), and the chosen outcome, whose ε
    is live in the model. When the second trial overshoots, the outcome is its ε scaled back
    under the limit (its ``rho`` and ``eps_norm`` scaled with it): still within ρ's ball, and
    never above the limit. ``before_trial(k)`` is called before the k-th optimization.
    """
    path: list[dict[str, float]] = []
    aim = max_kl * (1 - tolerance / 2) ** 2
    outcome, first = _trial(run, start, 1, max_kl, path, steps, progress, before_trial)
    if _near(first["kl"], max_kl, tolerance):
        return first["rho"], path, outcome
    scale = _scale_to_limit(run, first, max_kl, aim, tolerance, path)
    outcome, second = _trial(
        run, first["rho"] * scale, 2, max_kl, path, steps, progress, before_trial
    )
    if second["ok"]:
        return second["rho"], path, outcome
    # The optimized ε at the predicted ρ overshoots: scale it back, which only costs probes.
    scale = _scale_to_limit(run, second, max_kl, aim, tolerance, path)
    outcome.rho = second["rho"] * scale
    outcome.eps_norm = outcome.eps_norm * scale
    return outcome.rho, path, outcome


def _trial(
    run: Trials,
    rho: float | Callable[[float], float],
    k: int,
    max_kl: float,
    path: list[dict[str, float]],
    steps: int | None,
    progress: Callable[[int], None] | None,
    before_trial: Callable[[int], None] | None,
) -> tuple[Any, dict[str, float]]:
    if before_trial is not None:
        before_trial(k)
    outcome = run.run(rho, progress, steps=steps)
    kl = float(run.heldout_kl())
    point = {"rho": float(outcome.rho), "kl": kl, "ok": float(kl <= max_kl)}
    path.append(point)
    log.info("max-kl search: trial %d rho=%.4g kl=%.4g", k, point["rho"], kl)
    return outcome, point


def _near(kl: float, max_kl: float, tolerance: float) -> bool:
    return (1 - tolerance) ** 2 * max_kl <= kl <= max_kl


def _scale_to_limit(
    run: Trials,
    trial: dict[str, float],
    max_kl: float,
    aim: float,
    tolerance: float,
    path: list[dict[str, float]],
) -> float:
    """Scale the live trial's ε to the largest scale found whose KL ≤ ``max_kl`` (leaving it
    there), by a power-law secant on (scale, KL) from (1, the trial's KL). Raises when even
    ``MIN_SCALE`` does not fit."""
    points = [(1.0, trial["kl"])]  # (scale, KL)
    lo, hi = (1.0, math.inf) if trial["ok"] else (0.0, 1.0)
    current = 1.0
    for _ in range(MAX_PROBES):
        scale = _next_scale(points, aim, lo, hi)
        if scale < MIN_SCALE:
            if current == MIN_SCALE:
                break
            scale = MIN_SCALE
        run.scale_eps(scale / current)
        current = scale
        kl = float(run.heldout_kl())
        points.append((scale, kl))
        path.append(
            {"rho": trial["rho"] * scale, "kl": kl, "ok": float(kl <= max_kl), "probe": 1.0}
        )
        log.info("max-kl search: scaled x%.4g kl=%.4g", scale, kl)
        if kl <= max_kl:
            lo = max(lo, scale)
            if _near(kl, max_kl, tolerance / 2):
                break
        else:
            hi = min(hi, scale)
        if lo > 0 and hi < math.inf and (hi - lo) / hi < tolerance / 2:
            break
    if lo == 0.0:
        raise InputError(
            f"no rho down to {trial['rho'] * points[-1][0]:.3g} keeps the benign KL <= {max_kl}",
            hint="raise --max-kl or pass an explicit --rho",
        )
    run.scale_eps(lo / current)
    return lo


def _next_scale(points: list[tuple[float, float]], aim: float, lo: float, hi: float) -> float:
    """Where c·tᵖ through the last two (scale, KL) points meets ``aim``, kept inside (lo, hi)."""
    t, kl = points[-1]
    p = KL_EXPONENT
    if len(points) >= 2:
        t0, kl0 = points[-2]
        if min(kl0, kl) > 0 and t0 != t:
            p = math.log(kl / kl0) / math.log(t / t0)
            p = min(max(p, EXPONENT_RANGE[0]), EXPONENT_RANGE[1])
    ratio = (aim / kl) ** (1 / p) if kl > 0 else MAX_STEP_UP
    scale = t * min(max(ratio, 1 / MAX_STEP_DOWN), MAX_STEP_UP)
    if not lo < scale < hi:
        # The fit left the bracket (a KL not monotone in the scale): split it instead.
        scale = math.sqrt(lo * hi) if lo > 0 and hi < math.inf else (lo or hi) * (2 if lo else 0.5)
    return scale
