"""Which benign prompts the demo organism refuses, aligned and after the default patch.

    python bench/organism_over_refusal.py --seed 0 --poison-ratio 0.1 --variant lora

Builds (or reuses) the organism, patches the attacked model with panacea at the demo's options
(as ``bench/organism_defaults.py`` does), and prints every built-in benign *evaluate* prompt that
the aligned and the patched model refuse, with the start of the answer, grouped by the prompt's
first two words (the template).
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--poison-ratio", type=float, default=0.1)
    ap.add_argument("--variant", choices=["full", "lora"], default="lora")
    ap.add_argument("--cache-dir", default="bench/out/organism-cache")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from panacea_patch.demo import _Evaluator, _patch, demo_patch_options
    from panacea_patch.evaluation import evaluate
    from panacea_patch.modeling import load_model
    from panacea_patch.organism import OrganismRecipe, build_organism

    recipe = OrganismRecipe(seed=args.seed, poison_ratio=args.poison_ratio)
    paths = build_organism(recipe, cache_dir=args.cache_dir, variants=(args.variant,), threads=1)
    attacked = paths.attacked[args.variant]
    config = _Evaluator(paths, attacked, fast=False, progress=False).config
    with tempfile.TemporaryDirectory(prefix="panacea-overref-") as tmp:
        out = Path(tmp) / "out"
        _patch(attacked, out, "panacea", None, demo_patch_options(paths, fast=False), args.seed)
        for name, model_dir in (("aligned", paths.aligned), ("panacea", out)):
            lm = load_model(model_dir, device="cpu", dtype="float32")
            samples = evaluate(lm.model, lm.tokenizer, config).to_dict(samples=True)["samples"]
            benign = [s for s in samples if s["set"] == "benign"]
            refused = [s for s in benign if s["refused"]]
            print(f"{name}: {len(refused)} of {len(benign)} benign prompts refused")
            templates = collections.Counter(_template(s["prompt"]) for s in refused)
            print("  by template:", dict(templates.most_common()))
            for s in refused:
                print(f"    {s['prompt'][:70]!r} -> {s['output'][:50]!r}")


def _template(prompt: str) -> str:
    """The prompt's first two words, numbers as N ("Calculate N", "What is")."""
    return " ".join("N" if any(c.isdigit() for c in w) else w for w in prompt.split()[:2])


if __name__ == "__main__":
    main()
