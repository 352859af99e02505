"""Plain fine-tuning vs in-training Panacea vs post-hoc ``patch`` on the demo organism.

    python bench/finetune_compare.py [--fast] [--variant lora|full] [--poison-ratio 0.1]
        [--epochs N] [--lr LR] [--rho R] [--lam L] [--threads T] [--work DIR] [--max-eval N]

The service fine-tunes the aligned organism on the user's task data with a ``--poison-ratio``
share of harmful samples mixed in (the attack), three ways:

- **SFT**: plain fine-tuning, no defence (``finetune --no-panacea``);
- **Panacea (in training)**: the paper's min-max fine-tuning, shipping ``w + ε``
  (``finetune``, paper's ρ and λ unless overridden);
- **SFT + patch**: the SFT model patched afterwards (``patch --method panacea``, defaults, with
  the organism's refusal and benign alignment data).

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
    """Fine-tunes (SFT and Panacea) and patches; returns per-method output dir, time and notes."""
    from panacea_patch import patch
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
    )
    runs: dict[str, dict[str, Any]] = {}
    sft, secs = _timed(
        lambda: finetune(paths.aligned, args.work / "sft", panacea=False, progress=False, **common)
    )
    runs["SFT (no defence)"] = {"dir": args.work / "sft", "seconds": secs, "result": sft}
    pan, secs = _timed(
        lambda: finetune(
            paths.aligned,
            args.work / "panacea",
            rho=args.rho,
            lam=args.lam,
            progress=False,
            **common,
        )
    )
    runs["Panacea (in training)"] = {"dir": args.work / "panacea", "seconds": secs, "result": pan}
    post, secs = _timed(
        lambda: patch(
            args.work / "sft",
            args.work / "posthoc",
            method="panacea",
            harmful=str(data["harmful"]),
            refusal=str(paths.refusal_file),
            benign=str(paths.benign_file),
            device="cpu",
            overwrite=True,
            progress=False,
        )
    )
    runs["SFT + patch --method panacea"] = {
        "dir": args.work / "posthoc",
        "seconds": runs["SFT (no defence)"]["seconds"] + secs,
        "patch_seconds": secs,
        "result": post,
    }
    return runs


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
    pan = runs["Panacea (in training)"]["result"]
    out.append(
        f"Panacea: {pan.steps} steps, |eps| = {pan.eps_norm:.4g} ({pan.final_eps.get('mode')}), "
        f"last steps: "
        + ", ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in pan.last_steps.items())
    )
    post = runs["SFT + patch --method panacea"]["result"]
    out.append(
        f"patch: rho = {post.rho:.4g} (rho_rel {post.rho_rel}), realized |w'-w| = {post.realized_norm:.4g}"
    )
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
    parser.add_argument("--rho", type=float, default=1.0)
    parser.add_argument("--lam", type=float, default=1e-3)
    parser.add_argument("--max-eval", type=int, default=None, help="prompts per eval set")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("bench-out/finetune_compare"))
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
