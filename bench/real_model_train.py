"""A short LoRA SFT for the real-model bench: the alignment stage and the attack stage.

Plain PEFT and torch: response-only cross-entropy (the project's own batching and loss), AdamW,
one pass in a fixed shuffled order. It writes the adapter and, on request, the merged model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("real_model")


def lora_sft(
    base_dir: Path,
    rows: list[dict[str, str]],
    *,
    adapter_dir: Path,
    merged_dir: Path | None,
    epochs: int = 1,
    lr: float = 5e-4,
    rank: int = 16,
    alpha: int = 32,
    batch_size: int = 8,
    max_length: int = 160,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune ``base_dir`` with LoRA on (prompt, response) ``rows``; returns stats."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from panacea_patch.data import build_batches
    from panacea_patch.data.pairs import Pair
    from panacea_patch.objectives import response_ce

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    pairs = [
        Pair(prompt=r["prompt"], response=r["response"], source="bench", line=i + 1)
        for i, r in enumerate(rows)
    ]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    started, losses = time.perf_counter(), []
    model.train()
    for epoch in range(epochs):
        batches = build_batches(
            tok,
            pairs,
            batch_size=batch_size,
            max_length=max_length,
            shuffle_seed=seed + epoch,
            by_length=True,
        )
        for i, batch in enumerate(batches):
            loss = response_ce(model, batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss))
            if i % 10 == 0:
                log.info("epoch %d batch %d/%d loss %.3f", epoch, i, len(batches), losses[-1])
    model.eval()
    model.save_pretrained(adapter_dir)
    tok.save_pretrained(adapter_dir)
    if merged_dir is not None:
        merged = model.merge_and_unload()
        merged.save_pretrained(merged_dir)
        tok.save_pretrained(merged_dir)
    tail = losses[-10:]
    return {
        "examples": len(rows),
        "epochs": epochs,
        "steps": len(losses),
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "seconds": round(time.perf_counter() - started, 1),
        "lora": {"r": rank, "alpha": alpha, "lr": lr, "targets": "q,k,v,o"},
    }


def builtin_rows(role: str, split: str = "optimize") -> list[dict[str, str]]:
    """The built-in ``role`` set's ``split`` half as (prompt, response) rows."""
    from panacea_patch.data import load_pairs

    pairs = load_pairs(f"builtin:{role}", role=role, split=split)
    return [{"prompt": p.prompt, "response": p.response} for p in pairs]


def train_stage(b: Any, name: str, base: Path, rows: list[dict[str, str]]) -> Path:
    """Scenario B's LoRA SFT stage ``name`` ("align", "attack") on ``base``, merged, cached in
    ``b`` (a ``real_model.Bench``).

    A stage retrained on a new machine is compared with the recorded one by the adapter's
    sha256; a difference is logged and the old record kept under ``recorded_before`` (the
    patches and evaluations recorded on the old model are not rerun by themselves).
    """
    from panacea_patch.hashing import file_sha256

    merged = b.cache / ("B-aligned" if name == "align" else "B-attacked")
    adapter = b.cache / f"B-{name}-adapter"
    if (merged / "config.json").exists():
        return merged
    stats = lora_sft(base, rows, adapter_dir=adapter, merged_dir=merged, epochs=1)
    stats["adapter_sha256"] = file_sha256(adapter / "adapter_model.safetensors")
    before = b._load(f"train/{name}.json")
    if before and before.get("adapter_sha256") not in (None, stats["adapter_sha256"]):
        log.warning(
            "retrained %s differs from the recorded one: its recorded results no "
            "longer describe this model",
            name,
        )
        stats["recorded_before"] = before
    b.save(f"train/{name}.json", stats)
    b.timed(f"train:{name}", stats["seconds"])
    return merged
