"""The drift term's answer head: the benign KL where a model decides to answer or refuse."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from panacea_patch import objectives, patch
from panacea_patch.data import IGNORE_INDEX, build_batches, load_pairs
from panacea_patch.objectives import BenignReference, answer_head
from tests.helpers import FAST_PATCH

FAST = dict(FAST_PATCH)


def _benign_batches(tokenizer, limit: int = 12) -> list[dict]:
    pairs = load_pairs("builtin:benign", role="benign", split="optimize", limit=limit)
    return build_batches(tokenizer, pairs, batch_size=6, max_length=128)


def test_answer_head_marks_the_first_n_response_targets_of_each_row(tiny_tokenizer) -> None:
    (batch, *_) = _benign_batches(tiny_tokenizer)
    head = answer_head(batch, 3)
    # Rebuild the flat position list row by row: a real (attended) next-token position, marked
    # when its target is one of the row's first three response tokens.
    expected = []
    for row in range(batch["input_ids"].shape[0]):
        mask = batch["attention_mask"][row].bool()
        labels = batch["labels"][row]
        seen = 0
        for t in range(labels.numel() - 1):
            if not (mask[t] and mask[t + 1]):
                continue
            is_response = bool(labels[t + 1] != IGNORE_INDEX)
            seen += is_response
            expected.append(is_response and seen <= 3)
    assert head.tolist() == expected
    assert int(head.sum()) == 3 * batch["input_ids"].shape[0]
    assert not answer_head(batch, 0).any()
    # None: every response target, the end-of-turn token included.
    whole = answer_head(batch, None)
    mask = batch["attention_mask"].bool()
    positions = mask[:, :-1] & mask[:, 1:]
    assert torch.equal(whole, (batch["labels"][:, 1:] != IGNORE_INDEX)[positions])
    assert bool((whole | ~head).all()) and int(whole.sum()) > int(head.sum())


def test_drift_adds_the_weighted_head_kl_and_is_zero_at_the_reference(
    llama_dir: Path, tiny_tokenizer, monkeypatch
) -> None:
    # Keep the whole (400-token) vocabulary, so a plain full-vocabulary KL is the oracle.
    monkeypatch.setattr(objectives, "REFERENCE_TOP_K", 400)
    model = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    batches = _benign_batches(tiny_tokenizer)
    ref = BenignReference(batches, head_tokens=4, head_weight=2.5).compute(model)
    assert abs(float(ref.drift(model, 0).detach())) < 1e-6
    with torch.no_grad():
        reference_logits = model(**{k: batches[0][k] for k in ("input_ids", "attention_mask")})
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        moved_logits = model(**{k: batches[0][k] for k in ("input_ids", "attention_mask")})
        mask = batches[0]["attention_mask"].bool()
        pos = mask[:, :-1] & mask[:, 1:]
        p_ref = F.log_softmax(reference_logits.logits[:, :-1][pos], -1)
        p_new = F.log_softmax(moved_logits.logits[:, :-1][pos], -1)
        per = (p_ref.exp() * (p_ref - p_new)).sum(-1)
        head = answer_head(batches[0], 4)
        expected = per.mean() + 2.5 * per[head].mean()
        assert torch.allclose(ref.drift(model, 0), expected, rtol=1e-4)
        assert torch.allclose(ref.kl(model, 0), per.mean(), rtol=1e-4)
        # The head matters: its KL is not the whole-sequence mean.
        assert not torch.allclose(per[head].mean(), per.mean(), rtol=1e-2)


def test_answer_kl_weight_changes_the_patch(llama_dir: Path, tmp_path: Path) -> None:
    def run(weight: float) -> dict:
        out = tmp_path / f"w{weight}"
        res = patch(llama_dir, out=out, steps=4, rho=0.5, answer_kl_weight=weight, **FAST)
        return res.optimization

    plain, headed = run(0.0), run(4.0)
    # Same start (the closed form does not see u), then the ascent weighs u differently.
    assert plain["history"][0]["h"] == headed["history"][0]["h"]
    assert plain["history"][0]["u"] < headed["history"][0]["u"]
    assert plain["history"][-1]["h"] != headed["history"][-1]["h"]
