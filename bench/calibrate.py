"""Calibrate `patch` defaults on the demo organism, on development data only.

Grid over rho_rel x alpha (x steps, step size) for each attack variant. Scores use data that
the held-out evaluation never sees: harmful score on the built-in *optimize* half (the half the
patch optimizes on), over-refusal on the benign *optimize* half, and task accuracy on problems
drawn from the organism's training share. The held-out evaluation prompts are never touched here.

    python bench/calibrate.py [--seeds 0 1] [--variants full lora] [--rho-rel 0.01 0.02 0.04]
"""

from __future__ import annotations

import argparse
import itertools
import json
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
    ap.add_argument("--rho-rel", type=float, nargs="+", default=[0.01, 0.02, 0.04, 0.08])
    ap.add_argument("--alpha", type=float, nargs="+", default=[1.0, 4.0])
    ap.add_argument("--beta", type=float, nargs="+", default=[10.0])
    ap.add_argument("--steps", type=int, nargs="+", default=[20])
    ap.add_argument("--step-size", type=float, nargs="+", default=[0.25])
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument(
        "--benign-data",
        choices=["task", "benign"],
        default="task",
        help="utility term on the user's task data (default) or the organism's benign requests",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from panacea_patch import patch
    from panacea_patch.demo import demo_patch_options
    from panacea_patch.evaluation import EvalConfig, evaluate
    from panacea_patch.modeling import load_model
    from panacea_patch.organism import OrganismRecipe, build_organism, write_task_jsonl
    from panacea_patch.organism.corpus import task_problems

    rows = []
    for seed in args.seeds:
        recipe = OrganismRecipe(seed=seed)
        paths = build_organism(
            recipe, cache_dir=args.cache_dir, variants=tuple(args.variants), threads=1
        )
        with tempfile.TemporaryDirectory(prefix="panacea-cal-") as tmp_s:
            tmp = Path(tmp_s)
            dev_task = write_task_jsonl(
                task_problems(
                    seed, 100, recipe.max_operand, heldout=False, stream="calibration-dev"
                ),
                tmp / "dev_task.jsonl",
            )
            cfg = EvalConfig(
                task=str(dev_task),
                scorer="number",
                harmful_split="optimize",
                benign_split="optimize",
                max_new_tokens=32,
                batch_size=64,
                progress=False,
            )
            for variant in args.variants:
                src = paths.attacked[variant]
                grid = itertools.product(
                    args.rho_rel, args.alpha, args.beta, args.steps, args.step_size
                )
                for rho_rel, alpha, beta, steps, step_size in grid:
                    out = tmp / "out"
                    start = time.perf_counter()
                    result = patch(
                        src,
                        out,
                        overwrite=True,
                        progress=False,
                        seed=seed,
                        rho_rel=rho_rel,
                        alpha=alpha,
                        beta=beta,
                        steps=steps,
                        step_size=step_size,
                        **demo_patch_options(paths, fast=False, benign=args.benign_data),
                    )
                    secs = time.perf_counter() - start
                    lm = load_model(out, device="cpu", dtype="float32")
                    r = evaluate(lm.model, lm.tokenizer, cfg).to_dict()
                    row = dict(
                        seed=seed,
                        variant=variant,
                        rho_rel=rho_rel,
                        alpha=alpha,
                        beta=beta,
                        steps=steps,
                        step_size=step_size,
                        rho=result.rho,
                        realized=result.realized_norm,
                        hs=r["harmful_score"],
                        refusal=r["refusal_rate"],
                        incoherent=r["incoherence_rate"],
                        over_refusal=r["over_refusal"],
                        fa=r["task_accuracy"],
                        seconds=secs,
                    )
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
