"""The shared-prefix forward against the plain one, on SmolLM2-135M-Instruct's real batches.

    python bench/shared_prefix_bench.py [--passes 6] [--threads 1]

Builds the default run's batches (built-in data, SmolLM2's chat template with its system
prompt) and times forward+backward passes of each role's loss both ways, alternating, in the
same process: the plain pass runs every row whole; the shared pass runs the rows' common first
tokens once (``panacea_patch.shared_prefix``). Prints tokens and seconds per pass for each, the
ratios, and the largest difference between the two losses. Needs the real-model bench's
checkpoint (``python bench/real_model.py prepare``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from real_model_eval import _plain_response_ce

from panacea_patch.config import PatchConfig
from panacea_patch.data import count_tokens
from panacea_patch.methods.perturb import AlignmentData
from panacea_patch.modeling import load_model
from panacea_patch.objectives import response_ce


def _timed(fn, batch: dict) -> tuple[float, float]:
    started = time.perf_counter()
    loss = fn(batch)
    loss.backward()
    return time.perf_counter() - started, float(loss.detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, default=Path("bench/out/real-model/smollm2-float32"))
    ap.add_argument("--passes", type=int, default=6, help="batches timed per role and way")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(args.model, device="cpu", dtype="float32")
    # As in a patch: only the default targets (the decoder layers' matrices) take gradients.
    for name, param in lm.model.named_parameters():
        param.requires_grad_(name.startswith("model.layers.") and param.ndim == 2)
    data = AlignmentData.load(lm.tokenizer, PatchConfig())
    ways = {
        "plain": lambda b: _plain_response_ce(lm.model, b),
        "shared": lambda b: response_ce(lm.model, b),
    }
    for role in ("harmful", "refusal"):
        batches = getattr(data, role)[: args.passes]
        seconds = {"plain": 0.0, "shared": 0.0}
        worst = 0.0
        for batch in batches:
            losses = {}
            for way, fn in ways.items():
                s, losses[way] = _timed(fn, batch)
                seconds[way] += s
            lm.model.zero_grad(set_to_none=True)
            worst = max(worst, abs(losses["plain"] - losses["shared"]))
        plain_t, shared_t = count_tokens(batches), count_tokens(batches, share=True)
        print(
            f"{role}: {len(batches)} batches; tokens plain {plain_t}, shared {shared_t} "
            f"(ratio {plain_t / shared_t:.2f}); seconds plain {seconds['plain']:.2f}, shared "
            f"{seconds['shared']:.2f} (ratio {seconds['plain'] / seconds['shared']:.2f}); "
            f"largest loss difference {worst:.2e}"
        )


if __name__ == "__main__":
    main()
