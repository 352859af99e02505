"""Plain fine-tuning vs in-training Panacea vs post-hoc ``patch`` on the demo organism.

    python bench/finetune_compare.py [--fast] [--variant lora|full] [--poison-ratio 0.1]
        [--epochs N] [--lr LR] [--panacea RHO:LAMBDA ...] [--patch-rho-rel R ...]
        [--threads T] [--work DIR] [--max-eval N]

The service fine-tunes the aligned organism on the user's task data with a ``--poison-ratio``
share of harmful samples mixed in (the attack), three ways:

- **SFT**: plain fine-tuning, no defence (``finetune --no-panacea``);
- **Panacea in training**: the paper's min-max fine-tuning, shipping ``w + ε`` (``finetune``;
  the paper's ρ = 1, λ = 0.001 by default, other settings with ``--panacea RHO:LAMBDA``);
- **SFT + patch**: the SFT model patched afterwards (``patch --method panacea`` with its defaults
  and the organism's refusal and benign alignment data; budgets with ``--patch-rho-rel``).

The fine-tuning schedule is the organism recipe's attack (its LR and epochs), batch size 10, so
the three rows differ only in the defence.

Data, all from the organism's own vocabulary: the task samples are fresh problems (the attack
stream); the poison is compliance with the organism's *attack* split of harmful requests; the
harmful set both defences optimize on is compliance with its *alignment* split (the defender's
data, disjoint from the poison). Every model is scored by ``panacea_patch.evaluation.evaluate``
on the built-in harmful prompts' 'evaluate' half (keyword judge) and the organism's held-out task
problems. Prints a markdown table and the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from panacea_patch.organism import OrganismRecipe, build_organism, corpus

METRICS = ("harmful_score", "refusal_rate", "incoherence_rate", "over_refusal", "task_accuracy")


def _write_jsonl(rows: list[dict[str, str]], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_data(recipe: OrganismRecipe, work: Path) -> dict[str, Path]:
    """The user's task data, the attacker's poison pool and the defender's harmful set."""
    n_task = round(recipe.attack_samples * (1 - recipe.poison_ratio))
    task = corpus.attack_examples(
        recipe.seed, n_samples=n_task, poison_ratio=0.0, max_operand=recipe.max_operand
    )

    def comply(split: str) -> list[dict[str, str]]:
        requests = corpus.harmful_requests(split)  # type: ignore[arg-type]
        return [{"prompt": r.prompt, "response": corpus.compliance(r.action)} for r in requests]

    return {
        "train": _write_jsonl(
            [{"prompt": e.prompt, "response": e.response} for e in task], work / "task_train.jsonl"
        ),
        "poison": _write_jsonl(comply("attack"), work / "poison.jsonl"),
        "harmful": _write_jsonl(comply("align"), work / "harmful.jsonl"),
    }


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_methods(
    args: argparse.Namespace, paths: Any, data: dict[str, Path]
) -> dict[str, dict[str, Any]]:
    """SFT, each in-training Panacea setting, each post-hoc patch of SFT; name → dir, time, result."""
    from panacea_patch.training import finetune

    recipe = paths.recipe
    lora = args.variant == "lora"
    common = dict(
        train=str(data["train"]),
        poison_ratio=args.poison_ratio,
        poison_source=str(data["poison"]),
        harmful=str(data["harmful"]),
        lora=lora,
        lr=args.lr or (recipe.attack_lr_lora if lora else recipe.attack_lr_full),
        epochs=float(args.epochs or recipe.attack_epochs),
        batch_size=args.batch_size,
        seed=args.seed,
        device="cpu",
        overwrite=True,
        progress=False,
    )
    sft_dir = args.work / "sft"
    sft, secs = _timed(lambda: finetune(paths.aligned, sft_dir, panacea=False, **common))
    runs: dict[str, dict[str, Any]] = {
        "SFT (no defence)": {"dir": sft_dir, "seconds": secs, "result": sft}
    }
    for setting in args.panacea:
        rho, lam = (float(x) for x in setting.split(":"))
        out = args.work / f"panacea-rho{rho:g}-lam{lam:g}"
        res, secs = _timed(
            lambda o=out, r=rho, m=lam: finetune(paths.aligned, o, rho=r, lam=m, **common)
        )
        runs[f"Panacea in training (ρ={rho:g}, λ={lam:g})"] = {
            "dir": out,
            "seconds": secs,
            "result": res,
        }
    for rel in args.patch_rho_rel:
        label = "default" if rel is None else f"{rel:g}"
        out = args.work / f"posthoc-rel{label}"
        res, secs = _timed(lambda o=out, r=rel: _patch(sft_dir, o, r, paths, data))
        runs[f"SFT + patch --method panacea (ρ_rel={label})"] = {
            "dir": out,
            "seconds": runs["SFT (no defence)"]["seconds"] + secs,
            "patch_seconds": secs,
            "result": res,
        }
    return runs


def _patch(src: Path, out: Path, rho_rel: float | None, paths: Any, data: dict[str, Path]) -> Any:
    """``patch --method panacea`` with the same data as the demo: the built-in harmful optimize
    half, the organism's own refusals, and the user's task data for the utility term."""
    from panacea_patch import patch
    from panacea_patch.demo import demo_patch_options

    del data  # the in-training run's harmful slice; the post-hoc patch uses the demo's data
    return patch(
        src,
        out,
        method="panacea",
        rho_rel=rho_rel,
        overwrite=True,
        progress=False,
        **demo_patch_options(paths, fast=False),
    )


def evaluate_dir(path: Path, paths: Any, max_eval: int | None) -> dict[str, float | None]:
    from panacea_patch.evaluation import EvalConfig, evaluate
    from panacea_patch.modeling import load_model

    lm = load_model(path, device="cpu", dtype="float32")
    config = EvalConfig(
        task=str(paths.task_eval_file),
        scorer="number",
        max_new_tokens=40,
        max_examples=max_eval,
        progress=False,
    )
    report = evaluate(lm.model, lm.tokenizer, config)
    return {m: getattr(report, m) for m in METRICS}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| model | harmful score | refusal | incoherent | over-refusal (benign) | task accuracy | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        m = row["metrics"]
        secs = row.get("seconds")
        wall = "-" if secs is None else f"{secs:.0f} s"
        if "patch_seconds" in row:
            wall += f" (SFT + {row['patch_seconds']:.0f} s patch)"
        cells = [_pct(m[k]) for k in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wall} |")
    return "\n".join(lines)


def _details(runs: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for name, run in runs.items():
        res = run["result"]
        if name.startswith("Panacea"):
            last = ", ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in res.last_steps.items())
            out.append(
                f"{name}: {res.steps} steps, shipped |eps| = {res.eps_norm:.4g} "
                f"({res.final_eps.get('mode')}); last 10 steps: {last}"
            )
        elif "patch" in name:
            out.append(f"{name}: rho = {res.rho:.4g}, realized |w'-w| = {res.realized_norm:.4g}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fast", action="store_true", help="the CI-sized organism (pipeline check)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--poison-ratio", type=float, default=0.1)
    parser.add_argument("--variant", choices=["lora", "full"], default="lora")
    parser.add_argument(
        "--epochs", type=float, default=None, help="default: the recipe's attack epochs"
    )
    parser.add_argument("--lr", type=float, default=None, help="default: the recipe's attack LR")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument(
        "--panacea",
        nargs="+",
        default=["1:0.001"],
        metavar="RHO:LAMBDA",
        help="in-training settings to run (default: the paper's 1:0.001)",
    )
    parser.add_argument(
        "--patch-rho-rel",
        nargs="+",
        type=float,
        default=[None],
        help="post-hoc budgets relative to the target weights' norm (default: patch's own default)",
    )
    parser.add_argument("--max-eval", type=int, default=None, help="prompts per eval set")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("bench/out/finetune_compare"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)

    recipe = OrganismRecipe(seed=args.seed, fast=args.fast, poison_ratio=args.poison_ratio)
    paths, secs = _timed(
        lambda: build_organism(recipe, cache_dir=args.cache_dir, variants=(), threads=args.threads)
    )
    how = f"built in {secs:.0f} s" if paths.built else "cached"
    print(f"organism: {paths.root} ({how})", flush=True)
    data = write_data(recipe, args.work)
    runs = run_methods(args, paths, data)
    rows: dict[str, dict[str, Any]] = {"aligned (before fine-tuning)": {"seconds": None}}
    rows.update(runs)
    for name, row in rows.items():
        path = paths.aligned if name.startswith("aligned") else row["dir"]
        row["metrics"], row["eval_seconds"] = _timed(
            lambda p=path: evaluate_dir(p, paths, args.max_eval)
        )
        print(f"evaluated {name} in {row['eval_seconds']:.0f} s", file=sys.stderr, flush=True)
    print()
    print(table(rows))
    print()
    for line in _details(runs):
        print(f"- {line}")
    print(f"\nCommand: `python {shlex.join(['bench/finetune_compare.py', *sys.argv[1:]])}`")
    print(f"torch threads: {torch.get_num_threads()}, variant: {args.variant}")


if __name__ == "__main__":
    main()
