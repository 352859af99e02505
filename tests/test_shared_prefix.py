"""The shared-prefix forward: a batch's common first tokens run once, on top of one KV cache.

The oracle is one plain forward pass of the whole batch: logits and weight gradients must match
it on every architecture the fixtures build, through a PEFT adapter, and in a whole patch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from panacea_patch import patch, shared_prefix
from panacea_patch.data import build_batches, count_tokens, load_pairs
from panacea_patch.data.batching import MIN_PREFIX, prefix_length
from tests.helpers import FAST_PATCH, load_all

# A system prompt every example repeats, as real chat templates (SmolLM2's, Qwen's) add one.
SYSTEM_TEMPLATE = (
    "<|user|>\nYou are a careful assistant. Answer plainly and briefly.<|end|>\n"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>\n{{ message['content'] }}<|end|>\n"
    "{% else %}<|assistant|>\n{{ message['content'] }}<|end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _batch(vocab: int, *, prefix: int = 9, rows: int = 3, rest: int = 7) -> dict:
    gen = torch.Generator().manual_seed(1)
    head = torch.randint(5, vocab, (1, prefix), generator=gen).repeat(rows, 1)
    ids = torch.cat([head, torch.randint(5, vocab, (rows, rest), generator=gen)], dim=1)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0  # right padding of different lengths, as build_batches makes it
    mask[2, -1:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _plain(model, batch: dict) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _grads(model, logits_fn) -> dict[str, torch.Tensor]:
    model.zero_grad()
    logits_fn().pow(2).mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("span", [(0, 15), (3, 12), (10, 15), (2, 6)])
def test_span_logits_and_gradients_match_one_plain_pass(any_model_dir: Path, span) -> None:
    model = AutoModelForCausalLM.from_pretrained(any_model_dir, dtype=torch.float32).eval()
    batch = _batch(model.config.vocab_size)
    assert shared_prefix.supported(model) and prefix_length(batch) == 9
    start, end = span
    keep = batch["attention_mask"][:, start:end, None].bool()
    plain = _plain(model, batch)[:, start:end]
    shared = shared_prefix.span_logits(model, batch, start, end)
    assert shared.shape == plain.shape
    torch.testing.assert_close(shared * keep, plain * keep, atol=1e-5, rtol=1e-5)
    want = _grads(model, lambda: _plain(model, batch)[:, start:end] * keep)
    got = _grads(model, lambda: shared_prefix.span_logits(model, batch, start, end) * keep)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-4)


def test_span_logits_through_a_peft_adapter(lora_dir: Path, llama_dir: Path) -> None:
    base = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, lora_dir).eval()
    batch = _batch(base.config.vocab_size)
    assert shared_prefix.supported(model)
    keep = batch["attention_mask"][..., None].bool()
    shared = shared_prefix.span_logits(model, batch, 0, 16)
    torch.testing.assert_close(shared * keep, _plain(model, batch) * keep, atol=1e-5, rtol=1e-5)


def test_prefix_length_and_token_counts() -> None:
    batch = _batch(50)
    assert prefix_length(batch) == 9
    # 3 rows of 16 columns; the 9 shared columns are computed once, not three times.
    assert count_tokens([batch]) == 48
    assert count_tokens([batch], share=True) == 48 - 2 * 9
    one_row = {k: v[:1] for k, v in batch.items()}
    assert prefix_length(one_row) == 0
    short = _batch(50, prefix=MIN_PREFIX - 1)
    assert prefix_length(short) == 0  # too short to be worth a second forward call
    padded = _batch(50, prefix=9, rest=0)
    padded["attention_mask"][2, 5:] = 0
    # A column that one row does not attend ends the prefix; one column always stays out.
    assert prefix_length(padded) == 5
    same = _batch(50, prefix=12, rest=0)
    same["attention_mask"][:] = 1
    assert prefix_length(same) == 11


def test_checkpointing_turns_sharing_off(llama_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    assert shared_prefix.supported(model)
    model.gradient_checkpointing_enable()
    assert not shared_prefix.supported(model)


@pytest.fixture(scope="module")
def system_prompt_llama(llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("system-llama")
    shutil.copytree(llama_dir, out, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = SYSTEM_TEMPLATE
    tok.save_pretrained(out)
    return out


def test_a_patch_with_a_system_prompt_counts_fewer_tokens_for_the_same_eps(
    system_prompt_llama: Path, tmp_path: Path
) -> None:
    tok = AutoTokenizer.from_pretrained(system_prompt_llama)
    pairs = load_pairs("builtin:harmful", role="harmful", split="optimize", limit=16)
    batches = build_batches(tok, pairs, batch_size=8, max_length=128, response_tokens=16)
    assert all(prefix_length(b) >= 15 for b in batches)
    fast = dict(FAST_PATCH)
    runs = []
    # Checkpointing turns sharing off, so the second run is the plain forward pass.
    for i, checkpointing in enumerate((False, True)):
        result = patch(
            system_prompt_llama,
            tmp_path / f"o{i}",
            rho=0.05,
            steps=2,
            gradient_checkpointing=checkpointing,
            **fast,
        )
        runs.append((result.optimization["phases"], load_all(tmp_path / f"o{i}")))
    (shared, out_shared), (plain, out_plain) = runs
    for phase in ("reference", "closed_form", "ascent"):
        assert shared[phase]["passes"] == plain[phase]["passes"]
        assert shared[phase]["tokens"] < plain[phase]["tokens"], phase
    # The saving is the shared prefix, once per batch instead of once per row.
    saved = plain["closed_form"]["tokens"] - shared["closed_form"]["tokens"]
    assert saved >= 15 * (8 - 1) * shared["closed_form"]["passes"]
    for name, tensor in out_plain.items():
        torch.testing.assert_close(out_shared[name], tensor, atol=1e-6, rtol=1e-4)


def test_a_model_that_returns_no_cache_falls_back_to_the_plain_pass(llama_dir: Path) -> None:
    import functools

    from transformers import LlamaForCausalLM

    class CachelessLlama(LlamaForCausalLM):
        # Advertises a cache in its signature, as every decoder does, but returns none.
        @functools.wraps(LlamaForCausalLM.forward)
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            for key in ("cache", "past_key_values"):
                if key in out:
                    out[key] = None
            return out

    model = CachelessLlama.from_pretrained(llama_dir, dtype=torch.float32).eval()
    batch = _batch(model.config.vocab_size)
    assert shared_prefix.supported(model)
    keep = batch["attention_mask"][..., None].bool()
    got = shared_prefix.span_logits(model, batch, 0, 16)
    torch.testing.assert_close(got * keep, _plain(model, batch) * keep, atol=1e-5, rtol=1e-5)
    assert not shared_prefix.supported(model)  # remembered for the rest of the run
