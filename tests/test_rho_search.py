"""``--max-kl``'s search on stand-in KL curves: few trials, never over the limit.

The real search runs in ``test_methods.py`` on a real model; these curves make the number of
trials, the figure the secant exists to cut, exact and cheap to check on several shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from panacea_patch.errors import InputError
from panacea_patch.methods.rho_search import search_rho


@dataclass
class Outcome:
    rho: float


class Curve:
    """A run whose held-out KL after ``run(rho)`` is ``kl_of(rho)``; counts the runs."""

    def __init__(self, kl_of: Callable[[float], float]) -> None:
        self.kl_of, self.rho, self.runs = kl_of, 0.0, 0

    def run(self, rho: Any, progress: Any = None, *, steps: int | None = None) -> Outcome:
        self.rho = rho(4.5) if callable(rho) else float(rho)
        self.runs += 1
        return Outcome(self.rho)

    def heldout_kl(self) -> float:
        return self.kl_of(self.rho)


def _largest_fitting(kl_of: Callable[[float], float], limit: float) -> float:
    lo, hi = 1e-6, 1e6
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if kl_of(mid) <= limit else (lo, mid)
    return lo


CURVES = {
    "quadratic": lambda r: 0.2 * r * r,
    "cubic, steep": lambda r: 0.05 * r**3,
    "linear": lambda r: 0.01 * r,
    "quadratic then a wall": lambda r: 0.2 * r * r if r < 0.6 else 0.2 * r * r + 8.0,
}


@pytest.mark.parametrize("name", CURVES)
@pytest.mark.parametrize("start", [0.05, 0.5, 3.3, 40.0])
def test_the_search_stays_under_the_limit_and_near_it(name: str, start: float) -> None:
    kl_of, limit, tolerance = CURVES[name], 0.05, 0.2
    curve = Curve(kl_of)
    rho, path, outcome = search_rho(curve, limit, start=start, tolerance=tolerance)
    best = _largest_fitting(kl_of, limit)
    assert kl_of(rho) <= limit
    assert rho >= best * (1 - tolerance) ** 2, (rho, best, path)
    assert curve.runs == len(path) <= 10
    # The chosen trial's outcome comes back exactly when it was the last run.
    assert (outcome is not None) == (path[-1]["rho"] == rho)


def test_a_power_law_needs_at_most_three_trials() -> None:
    # Bisection needed 5–6 full optimizations from the default's start (RESULTS, session 3).
    for start in (0.05, 0.5, 3.3, 40.0):
        curve = Curve(CURVES["quadratic"])
        _, path, outcome = search_rho(curve, 0.05, start=start)
        assert len(path) <= 3, path
        assert outcome is not None  # no extra optimization to rebuild the chosen ε


def test_each_trial_is_announced_before_it_runs() -> None:
    curve, announced = Curve(CURVES["cubic, steep"]), []

    def before(k: int) -> None:
        assert curve.runs == k - 1  # called before the k-th run, not after
        announced.append(k)

    _, path, _ = search_rho(curve, 0.05, start=40.0, before_trial=before)
    assert announced == list(range(1, len(path) + 1)) and len(path) >= 2


def test_the_start_may_be_a_rule_of_the_gradient_norm() -> None:
    curve = Curve(CURVES["quadratic"])
    _, path, _ = search_rho(curve, 0.05, start=lambda grad_norm: grad_norm / 9)
    assert path[0]["rho"] == pytest.approx(0.5)


def test_no_rho_fits_is_an_error_that_names_the_fix() -> None:
    curve = Curve(lambda r: 1.0 + r)
    with pytest.raises(InputError, match="keeps the benign KL") as info:
        search_rho(curve, 0.05, start=1.0, max_trials=4)
    assert "--max-kl" in str(info.value.hint)
    assert curve.runs == 4
