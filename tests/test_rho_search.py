"""``--max-kl``'s search on stand-in KL curves: two optimizations at most, never over the limit.

The real search runs in ``test_methods.py`` on a real model; these curves make the number of
optimizations (the figure the probes exist to cut) and probes exact and cheap to check.
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
    eps_norm: float


class Curve:
    """A run whose live ε is the last trial's, scaled by ``factor``; its held-out KL is
    ``kl_of(rho · factor)`` times ``bias[k]`` for the k-th trial (an optimized ε at a ρ need not
    cost what another trial's ε scaled to that ρ costs). Counts runs and probes."""

    def __init__(self, kl_of: Callable[[float], float], bias: tuple[float, ...] = (1.0,)) -> None:
        self.kl_of, self.bias = kl_of, bias
        self.rho, self.factor, self.runs, self.probes = 0.0, 1.0, 0, 0

    def run(self, rho: Any, progress: Any = None, *, steps: int | None = None) -> Outcome:
        self.rho = rho(4.5) if callable(rho) else float(rho)
        self.factor = 1.0
        self.runs += 1
        return Outcome(self.rho, self.rho)

    def scale_eps(self, factor: float) -> None:
        self.factor *= factor
        self.probes += 1

    def heldout_kl(self) -> float:
        bias = self.bias[min(self.runs, len(self.bias)) - 1]
        return self.kl_of(self.rho * self.factor) * bias


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
def test_two_optimizations_land_under_the_limit_and_near_it(name: str, start: float) -> None:
    kl_of, limit, tolerance = CURVES[name], 0.05, 0.2
    curve = Curve(kl_of)
    rho, path, outcome = search_rho(curve, limit, start=start, tolerance=tolerance)
    best = _largest_fitting(kl_of, limit)
    assert curve.heldout_kl() <= limit  # the live ε is the one returned
    assert rho >= best * (1 - tolerance) ** 2, (rho, best, path)
    trials = [p for p in path if not p.get("probe")]
    assert curve.runs == len(trials) <= 2
    # Probes are forward passes: bounded, and each one is in the path.
    assert curve.probes <= 2 * 11 and len(path) - len(trials) <= 20
    assert outcome.rho == pytest.approx(rho)


@pytest.mark.parametrize("bias", [1.6, 0.6])
def test_an_optimized_eps_that_costs_more_or_less_than_the_probes_said(bias: float) -> None:
    # The second trial's ε costs 1.6x (or 0.6x) the KL the scaled first one did at its ρ.
    limit = 0.05
    curve = Curve(CURVES["quadratic"], bias=(1.0, bias))
    rho, path, outcome = search_rho(curve, limit, start=3.3)
    assert curve.runs == 2
    assert curve.heldout_kl() <= limit
    second = [p for p in path if not p.get("probe")][1]
    if bias > 1:
        # Overshot: the second ε is scaled back under the limit, not optimized a third time.
        assert second["ok"] == 0.0 and rho < second["rho"]
        assert outcome.eps_norm == pytest.approx(second["rho"] * curve.factor)
        assert curve.heldout_kl() >= limit * 0.8**2
    else:
        assert second["ok"] == 1.0 and rho == second["rho"]


def test_a_first_trial_near_the_limit_is_the_answer() -> None:
    curve = Curve(CURVES["quadratic"])
    rho, path, _ = search_rho(curve, 0.05, start=0.45)  # KL 0.0405: within 20% in rho
    assert rho == 0.45 and curve.runs == 1 and curve.probes == 0 and len(path) == 1


def test_each_trial_is_announced_before_it_runs() -> None:
    curve, announced = Curve(CURVES["cubic, steep"]), []

    def before(k: int) -> None:
        assert curve.runs == k - 1  # called before the k-th run, not after
        announced.append(k)

    search_rho(curve, 0.05, start=40.0, before_trial=before)
    assert announced == [1, 2]


def test_the_start_may_be_a_rule_of_the_gradient_norm() -> None:
    curve = Curve(CURVES["quadratic"])
    _, path, _ = search_rho(curve, 0.05, start=lambda grad_norm: grad_norm / 9)
    assert path[0]["rho"] == pytest.approx(0.5)


def test_no_rho_fits_is_an_error_that_names_the_fix() -> None:
    curve = Curve(lambda r: 1.0 + r)
    with pytest.raises(InputError, match="keeps the benign KL") as info:
        search_rho(curve, 0.05, start=1.0)
    assert "--max-kl" in str(info.value.hint)
    assert curve.runs == 1  # probes, not optimizations, found that nothing fits
