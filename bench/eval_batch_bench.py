"""Generation batch size for the real-model bench's evaluations: 32 (the baseline) vs 128.

    python bench/eval_batch_bench.py --threads 1

Greedy answers of SmolLM2-135M-Instruct (the bench's fp32 checkpoint; run
``python bench/real_model.py prepare`` first) to the first N built-in benign evaluation prompts,
48 new tokens, once per batch size in the same run; prints seconds, tokens per second, the ratio,
and how many answers are identical to the baseline's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("bench/out/real-model/smollm2-float32"))
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128, help="the batch size set against 32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from panacea_patch.data import load_pairs
    from panacea_patch.evaluation.generation import encode_prompts, generate_from_ids
    from panacea_patch.modeling import load_model

    lm = load_model(args.model, device="cpu", dtype="float32")
    pairs = load_pairs("builtin:benign", role="benign", split="evaluate")[: args.prompts]
    ids = encode_prompts(lm.tokenizer, [p.prompt for p in pairs])
    runs = {}
    for size in (32, args.batch):
        started = time.perf_counter()
        out = generate_from_ids(lm.model, lm.tokenizer, ids, max_new_tokens=48, batch_size=size)
        runs[size] = (time.perf_counter() - started, out)
        tokens = sum(map(len, out))
        print(f"batch {size}: {runs[size][0]:.1f} s, {tokens / runs[size][0]:.1f} tokens/s")
    (base_s, base), (new_s, new) = runs[32], runs[args.batch]
    same = sum(a == b for a, b in zip(base, new, strict=True))
    print(f"ratio {base_s / new_s:.2f}x; identical answers {same}/{len(base)}")


if __name__ == "__main__":
    main()
