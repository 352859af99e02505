"""The efficacy report as files: the sweep plot, the RESULTS.md block and the commands."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from efficacy_diagnostics import diagnostics_section, targets_section
from efficacy_run import RowStore
from efficacy_spec import BEGIN, CAL_BEGIN, CAL_END, END, FINETUNE_CMD, FT_BEGIN, FT_END
from efficacy_tables import Plan, Results, builtin_section, grid_section, sweep_section

SWEEP_STYLE = {"random": ("tab:gray", "s", "--"), "panacea": ("tab:blue", "o", "-")}


def _sweep_points(
    res: Results, plan: Plan, variant: str, method: str
) -> list[tuple[float, float, float]]:
    """(FA, HS, rho_rel) of each sweep budget that has a row."""
    pts = []
    for rel in plan.rho_rels:
        rows = res.rows("sweep", [plan.sweep_seed], plan.sweep_ratio, variant, method, rho_rel=rel)
        if rows:
            pts.append((rows[0]["fa"], rows[0]["hs"], rel))
    return pts


def _label_points(
    ax: Any, pts: Sequence[tuple[float, float, float]], color: str, dx: float
) -> None:
    """Labels each point with its rho_rel, spread vertically with leader lines.

    Many budgets land on the same spot (random never moves HS), so plain offsets overprint;
    labels are stacked at least ``gap`` HS points apart, on the side given by ``dx``.
    """
    gap = 5.5
    last = math.inf
    for x, y, rel in sorted(pts, key=lambda p: -p[1]):
        ly = min(y, last - gap)
        last = ly
        ax.annotate(
            f"{rel:g}",
            (x, y),
            xytext=(x + dx, ly),
            textcoords="data",
            ha="left" if dx > 0 else "right",
            va="center",
            fontsize=8.5,
            color=color,
            arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6, "alpha": 0.7},
        )


def plot_sweep(res: Results, plan: Plan, path: Path) -> bool:
    """Top: HS (y) against FA (x) per variant, a line per method, points labelled by rho_rel.

    Bottom: the same runs against rho_rel, which separates the points that coincide on top.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [
        v for v in plan.sweep_variants if any(_sweep_points(res, plan, v, m) for m in SWEEP_STYLE)
    ]
    if not variants:
        return False
    fas = [p[0] for v in variants for m in SWEEP_STYLE for p in _sweep_points(res, plan, v, m)]
    # A shared FA axis, so the two variants' utility costs compare at a glance; room on the
    # right (FA cannot exceed 100) holds the panacea labels.
    x_lo, x_hi = min(fas) - 6, 109
    span = x_hi - x_lo
    fig, axes = plt.subplots(2, len(variants), figsize=(6.6 * len(variants), 10), squeeze=False)
    seed, ratio = [plan.sweep_seed], plan.sweep_ratio
    for col, variant in enumerate(variants):
        ax, low = axes[0][col], axes[1][col]
        refs = {}
        for method, label, marker, color in (
            ("aligned", "aligned", "*", "tab:green"),
            ("none", "attacked", "X", "tab:red"),
        ):
            rows = res.rows("sweep", seed, ratio, variant, method)
            if rows:
                refs[method] = rows[0]
                ax.plot(
                    rows[0]["fa"],
                    rows[0]["hs"],
                    marker,
                    color=color,
                    ms=14,
                    ls="none",
                    label=label,
                    zorder=3,
                )
                low.axhline(rows[0]["hs"], color=color, lw=1, ls=":", label=f"{label} HS")
        for method, (color, marker, ls) in SWEEP_STYLE.items():
            pts = _sweep_points(res, plan, variant, method)
            if not pts:
                continue
            xs, ys, rels = zip(*pts, strict=True)
            ax.plot(xs, ys, ls, color=color, marker=marker, ms=7, lw=1.6, label=method)
            _label_points(ax, pts, color, dx=(0.08 if method == "panacea" else -0.06) * span)
            low.plot(rels, ys, "-", color=color, marker=marker, ms=6, lw=1.6, label=f"{method} HS")
            low.plot(
                rels,
                xs,
                ":",
                color=color,
                marker=marker,
                ms=6,
                lw=1.4,
                mfc="white",
                label=f"{method} FA",
            )
        ax.set_title(f"{variant} fine-tuning attack (p={ratio:g}, seed {seed[0]})")
        ax.set_xlabel("FA: held-out task accuracy (%), higher is better")
        ax.set_ylabel("HS: harmful score (%), lower is better")
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(-5, 106)
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", fontsize=9, title="labels: rho_rel", title_fontsize=8.5)
        low.set_title(f"{variant}: HS (solid) and FA (dotted) against the budget")
        low.set_xlabel("rho_rel = ρ / ‖target weights‖")
        low.set_ylabel("%")
        low.set_ylim(-5, 106)
        low.set_xticks(plan.rho_rels)
        low.tick_params(axis="x", labelsize=8)
        low.grid(alpha=0.3)
        # Below the axes: inside, it would hide the FA curve wherever it is put.
        low.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8.5, ncol=3)
    fig.suptitle("ρ sweep on the demo organism: random vs panacea at equal budgets", fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def finetune_section(finetune_output: Path) -> list[str]:
    """The finetune comparison: its saved output if it ran, else the command and 'not run'."""
    out = [
        "## In-fine-tuning Panacea vs post-hoc patch",
        "",
        f"Command: `{FINETUNE_CMD}`, then `python bench/efficacy.py --report-only`.",
        "",
        "`bench/finetune_compare.py` fine-tunes the aligned organism itself (SFT, LoRA, batch 10, "
        "the recipe's attack LR and epochs, p = 0.1), so its SFT model is not the grid's attacked "
        "model. Its patch and evaluation settings also differ from the tables above: the "
        "post-hoc patch optimizes on compliance with the organism's alignment-split harmful "
        "requests (not the built-in optimize half) with the organism's benign requests as the "
        "utility set (not the task data), at the `--patch-rho-rel` budgets given; answers are "
        "generated with up to 40 new tokens (not 32).",
        "",
    ]
    text = finetune_output.read_text() if finetune_output.exists() else ""
    if "| model |" in text:
        # The first line names the local cache directory: not useful in a shared document.
        kept = [line for line in text.strip().splitlines() if not line.startswith("organism:")]
        out += ["\n".join(kept).strip(), ""]
    else:
        out += ["Not run yet: run the command above.", ""]
    return out


def splice(text: str, begin: str, end: str, body: str) -> str:
    """Replace the text between ``begin`` and ``end`` (appending both if missing)."""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        return head + block + tail
    return text.rstrip() + "\n\n" + block + "\n"


def write_results(path: Path, efficacy: str, finetune: str | None) -> None:
    """Writes only the generated blocks; hand-written text (calibration, analysis) survives."""
    if path.exists():
        text = path.read_text()
    else:
        text = (
            "# Results on the demo model organism\n\n"
            f"{CAL_BEGIN}\n{CAL_END}\n\n{BEGIN}\n{END}\n\n{FT_BEGIN}\n{FT_END}\n"
        )
    if CAL_BEGIN not in text:  # the lead's calibration block goes first, after the title
        title, _, rest = text.partition("\n")
        text = f"{title}\n\n{CAL_BEGIN}\n{CAL_END}\n{rest}"
    text = splice(text, BEGIN, END, efficacy)
    if finetune is not None:
        text = splice(text, FT_BEGIN, FT_END, finetune)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def render(store: RowStore, plan: Plan, args: argparse.Namespace) -> str:
    """The efficacy block of RESULTS.md (also draws the plot)."""
    res = Results(store)
    commands = commands_for(plan, args)
    plotted = plot_sweep(res, plan, args.plot)
    lines = [
        "_Generated by `bench/efficacy.py`; edits inside these markers are overwritten._",
        "",
        f"Reproduce everything in this block: `{commands['all']}` (resumable; rows cached in "
        f"`bench/out/efficacy_rows.jsonl`, organisms in `bench/out/organism-cache`). "
        f"torch {torch.__version__}, 1 CPU thread.",
        "",
    ]
    lines += grid_section(res, plan, commands["grid"])
    lines += sweep_section(res, plan, commands["sweep"], args.plot)
    if not plotted:
        lines += ["(No sweep rows yet: the plot was not drawn.)", ""]
    lines += builtin_section(res, plan, commands["builtin"])
    lines += diagnostics_section(res, plan, commands["diagnostics"])
    lines += targets_section(res, plan)
    return "\n".join(lines)


def commands_for(plan: Plan, args: argparse.Namespace) -> dict[str, str]:
    """The command lines that reproduce each part of the report."""

    def nums(xs: Sequence[float]) -> str:
        return " ".join(f"{x:g}" for x in xs)

    base = "python bench/efficacy.py"
    grid = (
        f"{base} --parts grid --seeds {nums(plan.seeds)} --poison-ratios {nums(plan.ratios)} "
        f"--variants {' '.join(plan.variants)}"
    )
    sweep = (
        f"{base} --parts sweep --sweep-seed {plan.sweep_seed} --sweep-ratio {plan.sweep_ratio:g} "
        f"--sweep-variants {' '.join(plan.sweep_variants)} --rho-rel {nums(plan.rho_rels)}"
    )
    builtin = (
        f"{base} --parts builtin --builtin-seeds {nums(plan.builtin_seeds)} "
        f"--builtin-ratio {plan.builtin_ratio:g} --variants {' '.join(plan.variants)}"
    )
    # Everything at once: the three parts' options together (the defaults give the full report).
    everything = (
        f"{base} --seeds {nums(plan.seeds)} --poison-ratios {nums(plan.ratios)} "
        f"--variants {' '.join(plan.variants)} --sweep-seed {plan.sweep_seed} "
        f"--sweep-ratio {plan.sweep_ratio:g} --sweep-variants {' '.join(plan.sweep_variants)} "
        f"--rho-rel {nums(plan.rho_rels)} --builtin-seeds {nums(plan.builtin_seeds)} "
        f"--builtin-ratio {plan.builtin_ratio:g}"
    )
    diagnostics = (
        f"{base} --parts diagnostics --sweep-seed {plan.sweep_seed} "
        f"--sweep-ratio {plan.sweep_ratio:g} --sweep-variants {' '.join(plan.sweep_variants)}"
    )
    return {
        "grid": grid,
        "sweep": sweep,
        "builtin": builtin,
        "diagnostics": diagnostics,
        "all": everything,
    }
