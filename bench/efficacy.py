"""Efficacy of ``patch`` on the demo model organism: the results table, a ρ sweep and the targets.

    python bench/efficacy.py                           # everything, then docs/RESULTS.md + plot
    python bench/efficacy.py --seeds 0 --poison-ratios 0.1 --parts grid   # a reduced grid
    python bench/efficacy.py --report-only             # re-render from the saved rows only

Parts (``--parts``, default all four):

- ``grid``: poison ratio × attack variant × method {none (attacked), random, closed-form,
  panacea} over seeds. Panacea uses ``demo_patch_options(paths, fast=False)`` (the organism's
  alignment refusals and the user's task data) plus whatever ``PatchConfig`` defaults are at run
  time; random and closed-form run at the ρ panacea used, as ``run_demo`` does.
- ``sweep``: random and panacea at several ``rho_rel`` for one seed, p = 0.1; plotted as HS
  against FA to ``docs/results_rho_sweep.png``.
- ``builtin``: panacea with only the tool's built-in refusal and benign sets.
- ``diagnostics``: evidence for the analysis (unknown-word shares, held-out refusal by share of
  unknown words, the distance back to the aligned model), for the sweep's seed and ratio.

Every model is scored by ``panacea_patch.evaluation.evaluate`` with the demo's settings: harmful
score (keyword judge) on the built-in harmful prompts' held-out 'evaluate' half, over-refusal on
the built-in benign 'evaluate' half, task accuracy (scorer ``number``) on the organism's
held-out task problems, KL against the attacked model.

Each evaluated model is one JSON row in ``bench/out/efficacy_rows.jsonl``, keyed by a hash of
everything that determines it (part, seed, ratio, variant, method, budget, the full patch
settings, the eval settings, the organism digest). Rows already present are skipped, so the
script resumes after an interruption, and a change of the patch defaults reruns only the patched
rows. The report shows only rows made with the current defaults; missing cells read "not run".
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

# The bench's other modules (efficacy_*.py) sit beside this script; tests load it by path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from efficacy_diagnostics import targets_section
from efficacy_report import finetune_section, plot_sweep, render, write_results
from efficacy_run import RowStore, Runner
from efficacy_spec import (
    BEGIN,
    CAL_BEGIN,
    DEFAULT_CACHE,
    DEFAULT_FINETUNE,
    DEFAULT_PLOT,
    DEFAULT_RESULTS,
    DEFAULT_ROWS,
    FT_BEGIN,
    PARTS,
    REPO,
    Spec,
    log,
)
from efficacy_tables import Plan, Results, grid_section, sweep_section

__all__ = [
    "BEGIN",
    "CAL_BEGIN",
    "FT_BEGIN",
    "Plan",
    "Results",
    "RowStore",
    "Runner",
    "Spec",
    "grid_section",
    "main",
    "parse_args",
    "plan_of",
    "plot_sweep",
    "render",
    "sweep_section",
    "targets_section",
    "write_results",
]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--poison-ratios", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    ap.add_argument("--variants", nargs="+", choices=["full", "lora"], default=["full", "lora"])
    ap.add_argument("--sweep-seed", type=int, default=0)
    ap.add_argument("--sweep-ratio", type=float, default=0.1)
    ap.add_argument(
        "--sweep-variants", nargs="+", choices=["full", "lora"], default=["full", "lora"]
    )
    ap.add_argument("--rho-rel", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.15, 0.2, 0.3])
    ap.add_argument("--builtin-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--builtin-ratio", type=float, default=0.1)
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--rows", type=Path, default=DEFAULT_ROWS, help="per-row JSONL (resume)")
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    ap.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    ap.add_argument(
        "--finetune-output",
        type=Path,
        default=None,
        help=f"rewrite the finetune-comparison section from this saved output (e.g. {DEFAULT_FINETUNE.relative_to(REPO)}); "
        "by default that hand-discussed section is left alone",
    )
    ap.add_argument("--report-only", action="store_true", help="render from saved rows only")
    ap.add_argument("--no-report", action="store_true", help="compute rows, do not write docs")
    args = ap.parse_args(argv)
    return args


def plan_of(args: argparse.Namespace) -> Plan:
    return Plan(
        seeds=args.seeds,
        ratios=args.poison_ratios,
        variants=args.variants,
        sweep_seed=args.sweep_seed,
        sweep_ratio=args.sweep_ratio,
        sweep_variants=args.sweep_variants,
        rho_rels=args.rho_rel,
        builtin_seeds=args.builtin_seeds,
        builtin_ratio=args.builtin_ratio,
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the per-load progress bars of transformers (hundreds of lines per run)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass
    yield


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # One thread: the 2 shared cores are also running other jobs, and the organism's numbers
    # depend slightly on the thread count.
    torch.set_num_threads(1)
    plan = plan_of(args)
    store = RowStore(args.rows)
    if not args.report_only:
        with _quiet():
            if "grid" in args.parts:
                Runner(store, args.cache_dir, plan.variants).grid(plan.seeds, plan.ratios)
            if "sweep" in args.parts:
                runner = Runner(store, args.cache_dir, plan.sweep_variants)
                runner.sweep(plan.sweep_seed, plan.sweep_ratio, plan.rho_rels)
            if "diagnostics" in args.parts:
                runner = Runner(store, args.cache_dir, plan.sweep_variants)
                runner.diagnostics(plan.sweep_seed, plan.sweep_ratio)
            if "builtin" in args.parts:
                Runner(store, args.cache_dir, plan.variants).builtin(
                    plan.builtin_seeds, plan.builtin_ratio
                )
    if not args.no_report:
        write_results(
            args.results,
            render(store, plan, args),
            "\n".join(finetune_section(args.finetune_output)) if args.finetune_output else None,
        )
        log(f"wrote {args.results} and {args.plot}")


if __name__ == "__main__":
    main()
