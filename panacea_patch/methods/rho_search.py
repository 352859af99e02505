"""``--max-kl``: the largest ρ whose held-out benign KL stays under a limit."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from ..errors import InputError
from .perturb import PerturbationRun

log = logging.getLogger("panacea_patch")


def search_rho(
    run: PerturbationRun,
    max_kl: float,
    *,
    start: float | Callable[[float], float],
    max_trials: int = 10,
    tolerance: float = 0.2,
    steps: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[float, list[dict[str, float]]]:
    """Largest ρ whose held-out benign KL ≤ ``max_kl``: geometric search, then bisection.

    ``start`` is the first trial's ρ, or a rule from ‖∇h‖ to ρ (the scale-aware default), so
    the search begins near the right scale. It stops once the bracket is within ``tolerance``
    (relative). Returns the chosen ρ and the path of (ρ, KL) trials. Runs are deterministic, so
    the caller re-runs the method at the chosen ρ instead of keeping a second copy of ε around.
    """
    path: list[dict[str, float]] = []
    lo, hi, rho = 0.0, math.inf, start
    for _ in range(max_trials):
        rho = run.run(rho, progress, steps=steps).rho
        kl = run.heldout_kl()
        ok = kl <= max_kl
        path.append({"rho": rho, "kl": kl, "ok": float(ok)})
        log.info("max-kl search: rho=%.4g kl=%.4g (%s)", rho, kl, "ok" if ok else "over")
        if ok:
            lo = rho
        else:
            hi = rho
        if lo > 0 and hi != math.inf and (hi - lo) / hi < tolerance:
            break
        if hi == math.inf:
            rho = rho * 2
        elif lo == 0.0:
            rho = rho / 4
        else:
            rho = (lo + hi) / 2
    if lo == 0.0:
        raise InputError(
            f"no rho down to {rho:.3g} keeps the benign KL <= {max_kl}",
            hint="raise --max-kl or pass an explicit --rho",
        )
    return lo, path
