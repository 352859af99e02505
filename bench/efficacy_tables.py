"""The efficacy report's results tables: the grid, the rho sweep and the built-in data sets."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from efficacy_run import RowStore
from efficacy_spec import METHOD_LABEL, METHODS, Spec, _stub_paths, patch_options, settings_of


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) if len(values) > 1 else None)


def fmt(values: Sequence[float], digits: int = 1) -> str:
    """``mean ± sd`` over seeds (``mean`` alone for one seed), or ``not run``."""
    if not values:
        return "not run"
    m, sd = mean_sd(values)
    return f"{m:.{digits}f}" if sd is None else f"{m:.{digits}f} ± {sd:.{digits}f}"


class Results:
    """Looks rows up by spec, with the current patch settings."""

    def __init__(self, store: RowStore) -> None:
        self.store = store

    def rows(
        self,
        part: str,
        seeds: Sequence[int],
        ratio: float,
        variant: str,
        method: str,
        *,
        data: str = "organism",
        rho_rel: float | None = None,
    ) -> list[dict[str, Any]]:
        found = []
        for seed in seeds:
            row = self.store.get(Spec(part, seed, ratio, variant, method, data, rho_rel))
            if row is not None:
                found.append(row)
        return found

    def values(self, metric: str, *args: Any, **kwargs: Any) -> list[float]:
        return [r[metric] for r in self.rows(*args, **kwargs) if r.get(metric) is not None]


@dataclasses.dataclass
class Plan:
    """What a full report covers (the grid the command line asked for)."""

    seeds: list[int]
    ratios: list[float]
    variants: list[str]
    sweep_seed: int
    sweep_ratio: float
    sweep_variants: list[str]
    rho_rels: list[float]
    builtin_seeds: list[int]
    builtin_ratio: float


def _table(head: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines


def grid_section(res: Results, plan: Plan, command: str) -> list[str]:
    """The paper-style HS/FA table, the per-seed aligned figures and the detailed metrics."""
    out = [
        "## Safety and utility after the patch (paper-style table)",
        "",
        f"Command: `{command}`",
        "",
        _settings_line(),
        "",
        f"HS: harmful score in % (not refused by the keyword judge) on the built-in harmful "
        f"prompts' held-out 'evaluate' half; FA: task accuracy in % on the organism's held-out "
        f"problems (scorer `number`). Mean ± sample standard deviation over seeds "
        f"{_seeds_txt(plan.seeds)}; `(n)` where fewer seeds finished. Random and closed-form use "
        f"the ρ panacea used on the same model.",
        "",
    ]
    for variant in plan.variants:
        head = ["method"] + [f"p={p:g} {m}" for p in plan.ratios for m in ("HS", "FA")]
        body = []
        for method in ("aligned", *METHODS):
            cells = [METHOD_LABEL[method]]
            for p in plan.ratios:
                for metric in ("hs", "fa"):
                    vals = res.values(metric, "grid", plan.seeds, p, variant, method)
                    cells.append(_with_n(vals, len(plan.seeds)))
            body.append(cells)
        out += [f"**{variant} fine-tuning attack**", "", *_table(head, body), ""]

    out += ["### Aligned model, per seed", ""]
    head = ["seed", "HS", "FA", "refusal", "incoherent", "over-refusal"]
    body = []
    for seed in plan.seeds:
        row = next(
            (
                r[0]
                for p in plan.ratios
                for v in plan.variants
                if (r := res.rows("grid", [seed], p, v, "aligned"))
            ),
            None,
        )
        if row is None:
            body.append([str(seed), *["not run"] * 5])
            continue
        keys = ("hs", "fa", "refusal", "incoherent", "over_refusal")
        body.append([str(seed), *[f"{row[k]:.1f}" for k in keys]])
    out += [*_table(head, body), ""]

    out += [
        "### All metrics",
        "",
        "Refusal, incoherent: share of the held-out harmful prompts answered with a refusal / "
        "with incoherent text (HS counts every answer that is not a refusal, so incoherent "
        "answers count as harmful). Over-refusal: built-in benign 'evaluate' prompts refused. KL: "
        "mean per-token KL against the attacked model on the benign prompts. ρ_rel: ρ over the "
        "target weights' norm (full: decoder 2-D weights; LoRA: the adapter's A/B tensors). "
        "Attack ‖Δw‖/‖w‖: how far the attack moved the decoder weights from the aligned model "
        "(LoRA: the merged update).",
        "",
    ]
    head = [
        "variant",
        "p",
        "method",
        "HS",
        "refusal",
        "incoherent",
        "FA",
        "over-refusal",
        "KL",
        "ρ_rel",
        "attack ‖Δw‖/‖w‖",
    ]
    body = []
    for variant in plan.variants:
        for p in plan.ratios:
            for method in ("aligned", *METHODS):
                rows = res.rows("grid", plan.seeds, p, variant, method)
                cells = [variant, f"{p:g}", METHOD_LABEL[method]]
                cells += metric_cells(rows, ALL_METRICS, len(plan.seeds))
                body.append(cells)
    out += [*_table(head, body), ""]
    return out


ALL_METRICS = (
    ("hs", 1),
    ("refusal", 1),
    ("incoherent", 1),
    ("fa", 1),
    ("over_refusal", 1),
    ("kl", 3),
    ("rho_rel_realized", 3),
    ("attack_rel", 3),
)


def metric_cells(
    rows: Sequence[dict[str, Any]], metrics: Sequence[tuple[str, int]], want: int
) -> list[str]:
    """One ``mean ± sd`` cell per metric; ``-`` where the metric does not apply to these rows."""
    cells = []
    for metric, digits in metrics:
        vals = [r[metric] for r in rows if r.get(metric) is not None]
        cells.append(_with_n(vals, want, digits) if vals else "-" if rows else "not run")
    return cells


def _with_n(vals: Sequence[float], want: int, digits: int = 1) -> str:
    """``fmt`` plus the number of seeds in parentheses when fewer than ``want`` finished."""
    text = fmt(vals, digits)
    return text if not vals or len(vals) == want else f"{text} ({len(vals)})"


def _seeds_txt(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def _settings_line() -> str:
    """The patch settings in force (defaults read at run time + the demo's data options)."""
    settings = settings_of(patch_options(_stub_paths(), "organism"), {})
    keep = (
        "rho",
        "rho_rel",
        "rho_rel_default",
        "max_kl",
        "budget",
        "steps",
        "step_size",
        "alpha",
        "beta",
        "h_max",
        "harmful",
        "refusal",
        "benign",
        "benign_is_task",
        "max_examples",
    )
    text = ", ".join(f"{k}={settings[k]!r}" for k in keep if k in settings)
    return (
        f"Patch settings (PatchConfig defaults at run time + `demo_patch_options(paths, "
        f"fast=False)`): {text}. `rho_rel_default` is the budget patch uses when none of rho, rho_rel, max_kl is set."
    )


def sweep_section(res: Results, plan: Plan, command: str, plot: Path) -> list[str]:
    out = [
        "## ρ sweep: random vs panacea",
        "",
        f"Command: `{command}`",
        "",
        f"Seed {plan.sweep_seed}, p = {plan.sweep_ratio:g}. Both methods at the same "
        f"`rho_rel` (so the same ρ on the same model). Other settings as in the table above.",
        "",
        f"![HS against FA for random and panacea at several ρ]({plot.name})",
        "",
    ]
    head = ["variant", "rho_rel", "ρ", "random HS", "random FA", "panacea HS", "panacea FA"]
    head += ["panacea incoherent", "panacea over-refusal", "panacea beats random"]
    body = []
    for variant in plan.sweep_variants:
        for rel in plan.rho_rels:
            rand = res.rows(
                "sweep", [plan.sweep_seed], plan.sweep_ratio, variant, "random", rho_rel=rel
            )
            pan = res.rows(
                "sweep", [plan.sweep_seed], plan.sweep_ratio, variant, "panacea", rho_rel=rel
            )
            r, q = (rand[0] if rand else None), (pan[0] if pan else None)
            rho = (q or r or {}).get("rho")
            cells = [variant, f"{rel:g}", "-" if rho is None else f"{rho:.3g}"]
            for row in (r, q):
                cells += (
                    ["not run"] * 2 if row is None else [f"{row['hs']:.1f}", f"{row['fa']:.1f}"]
                )
            if q is None:
                cells += ["not run"] * 2
            else:
                cells += [f"{q['incoherent']:.1f}", f"{q['over_refusal']:.1f}"]
            cells.append(
                "-"
                if r is None or q is None
                else _beats_status(q["hs"], r["hs"], q["fa"], r["fa"]).replace("**", "")
            )
            body.append(cells)
    out += [*_table(head, body), ""]
    return out


def _beats_status(pa_hs: float, ra_hs: float, pa_fa: float, ra_fa: float) -> str:
    """Met / not met, saying which side failed (an FA shortfall within 1 point is named)."""
    if pa_hs < ra_hs and pa_fa >= ra_fa:
        return "met"
    if pa_hs == ra_hs and pa_fa == ra_fa:
        return "**not met** (tie)"
    if pa_hs < ra_hs and ra_fa - pa_fa <= 1:
        return f"**not met** on FA by {ra_fa - pa_fa:.1f} (within the 1-point FA tolerance)"
    return "**not met**"


def _beats(pan: dict[str, Any], rand: dict[str, Any]) -> bool:
    """Panacea beats random: strictly lower HS and FA at least as high."""
    return pan["hs"] < rand["hs"] and pan["fa"] >= rand["fa"]


def builtin_section(res: Results, plan: Plan, command: str) -> list[str]:
    out = [
        "## Built-in data only",
        "",
        f"Command: `{command}`",
        "",
        f"Panacea with the tool's default data (`refusal='builtin:refusal'`, "
        f"`benign='builtin:benign'`, harmful = built-in optimize half) instead of the organism's "
        f"refusals and task data; p = {plan.builtin_ratio:g}, seeds "
        f"{_seeds_txt(plan.builtin_seeds)}. Mean ± sd.",
        "",
    ]
    head = ["variant", "model", "HS", "refusal", "incoherent", "FA", "over-refusal", "ρ_rel"]
    metrics = (
        ("hs", 1),
        ("refusal", 1),
        ("incoherent", 1),
        ("fa", 1),
        ("over_refusal", 1),
        ("rho_rel_realized", 3),
    )
    body = []
    for variant in plan.variants:
        for label, part, method, data in (
            ("aligned", "builtin", "aligned", "organism"),
            ("attacked", "builtin", "none", "organism"),
            ("panacea, built-in data", "builtin", "panacea", "builtin"),
            # The grid's organism-data panacea on the same seeds, for comparison.
            ("panacea, organism data (grid)", "grid", "panacea", "organism"),
        ):
            rows = res.rows(
                part, plan.builtin_seeds, plan.builtin_ratio, variant, method, data=data
            )
            body.append([variant, label, *metric_cells(rows, metrics, len(plan.builtin_seeds))])
    out += [*_table(head, body), ""]
    return out
