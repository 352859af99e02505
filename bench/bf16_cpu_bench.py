"""bfloat16 against float32 compute on this CPU (AMX): generation, and a forward+backward pass.

    python bench/bf16_cpu_bench.py --threads 2

SmolLM2-135M-Instruct (the real-model bench's fp32 checkpoint; run
``python bench/real_model.py prepare`` first), loaded once per dtype by the tool's loader:
greedy answers to the first N built-in benign evaluation prompts (48 new tokens, batch 128, as
the bench evaluates), and the mean time of a forward+backward pass of a response loss on a
batch of those prompts. Prints seconds per dtype, the ratios, and how many answers are identical.
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
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from panacea_patch.data import load_pairs
    from panacea_patch.evaluation.generation import encode_prompts, generate_from_ids
    from panacea_patch.modeling import load_model

    pairs = load_pairs("builtin:benign", role="benign", split="evaluate")[: args.prompts]
    runs = {}
    for dtype in ("float32", "bfloat16"):
        lm = load_model(args.model, device="cpu", dtype=dtype)
        ids = encode_prompts(lm.tokenizer, [p.prompt for p in pairs])
        started = time.perf_counter()
        out = generate_from_ids(lm.model, lm.tokenizer, ids, max_new_tokens=48, batch_size=128)
        gen_s = time.perf_counter() - started
        train_s = _forward_backward_seconds(lm.model, lm.tokenizer, [p.prompt for p in pairs])
        runs[dtype] = (gen_s, train_s, out)
        print(f"{dtype}: generation {gen_s:.1f} s, forward+backward {train_s:.2f} s a pass")
    (g32, t32, a32), (g16, t16, a16) = runs["float32"], runs["bfloat16"]
    same = sum(a == b for a, b in zip(a32, a16, strict=True))
    print(
        f"ratio generation {g32 / g16:.2f}x, forward+backward {t32 / t16:.2f}x; "
        f"identical answers {same}/{len(a32)}"
    )


def _forward_backward_seconds(model: torch.nn.Module, tokenizer, prompts: list[str]) -> float:
    """Mean seconds of 3 passes (after one warm-up) of a next-token loss on 32 prompts."""
    batch = tokenizer(prompts[:32], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model.train()
    times = []
    for _ in range(4):
        started = time.perf_counter()
        model(**batch, labels=labels).loss.backward()
        times.append(time.perf_counter() - started)
        model.zero_grad(set_to_none=True)
    model.eval()
    return sum(times[1:]) / 3


if __name__ == "__main__":
    main()
