"""Check the patch defaults on the demo organism: panacea with demo options, per seed and variant.

    python bench/organism_defaults.py --seeds 0 1 [--variants full lora] [--cache-dir DIR]
        [--poison-ratio P] [--set KEY=VALUE ...]   # a candidate: patch options over the demo's

Prints one JSON row per (seed, variant): the budget rule and rho, steps run, the damage guard,
and the held-out HS / FA / refusal / incoherence / over-refusal / KL the demo reports. This is
the command behind the "adopted" rows of docs/RESULTS.md, "Recalibration for real models";
running it on the previous commit (a `git worktree` of it) gives the "before" figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=["full", "lora"])
    ap.add_argument("--poison-ratio", type=float, default=0.1)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override patch options (a candidate), e.g. --set answer_kl_weight=0",
    )
    args = ap.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    torch.set_num_threads(1)

    from panacea_patch.demo import _Evaluator, _patch, demo_patch_options
    from panacea_patch.organism import OrganismRecipe, build_organism

    for seed in args.seeds:
        recipe = OrganismRecipe(seed=seed, poison_ratio=args.poison_ratio)
        paths = build_organism(
            recipe, cache_dir=args.cache_dir, variants=tuple(args.variants), threads=1
        )
        for variant in args.variants:
            attacked = paths.attacked[variant]
            with tempfile.TemporaryDirectory(prefix="panacea-orgdef-") as tmp:
                out = Path(tmp) / "out"
                started = time.perf_counter()
                res = _patch(
                    attacked,
                    out,
                    "panacea",
                    None,
                    {**demo_patch_options(paths, fast=False), **overrides},
                    seed,
                )
                seconds = time.perf_counter() - started
                row = _Evaluator(paths, attacked, fast=False, progress=False).row(
                    "panacea", out, rho=res.rho, seconds=seconds
                )
                shutil.rmtree(out, ignore_errors=True)
            print(
                json.dumps(
                    {
                        "seed": seed,
                        "variant": variant,
                        "rho": res.rho,
                        "rule": res.rho_rule,
                        "steps_run": res.optimization.get("steps_run"),
                        "budget": res.optimization.get("budget"),
                        # budget.choose_budget's figure: the largest tensor move at the start.
                        "max_start_ratio": (res.optimization.get("budget_check") or {}).get(
                            "max_start_ratio"
                        ),
                        "grad_norm": res.optimization.get("harmful_grad_norm"),
                        "guard": res.guard,
                        "HS": row.harmful_score,
                        "FA": row.task_accuracy,
                        "refusal": row.refusal_rate,
                        "incoherent": row.incoherence_rate,
                        "over_refusal": row.over_refusal,
                        "kl": row.kl,
                        "seconds": round(seconds, 1),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
