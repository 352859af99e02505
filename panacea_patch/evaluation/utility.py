"""Utility metrics: KL divergence to a reference model, and perplexity on benign responses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from panacea_patch.data import build_batches, resolve_pad_token_id
from panacea_patch.errors import InputError
from panacea_patch.evaluation.batching import BatchSize, run_batched
from panacea_patch.evaluation.generation import (
    encode_prompts,
    generate_from_ids,
    model_device,
)


@dataclass(frozen=True)
class KLResult:
    """Token-weighted mean KL, the number of tokens it averages over, and each prompt's mean."""

    mean: float
    tokens: int
    per_prompt: list[float]


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity over all response tokens, and how many tokens that is."""

    perplexity: float
    tokens: int
    mean_nll: float


def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    # Positions count real tokens only, so padding on either side leaves them unchanged.
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _logits(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    device = model_device(model)
    ids, mask = ids.to(device), mask.to(device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=_position_ids(mask))
    return out.logits


def _right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def kl_to_reference(
    model: Any,
    reference: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: BatchSize = "auto",
    progress: bool = False,
    continuations: Sequence[Sequence[int]] | None = None,
) -> KLResult:
    """Mean next-token KL(p_ref ‖ p_model) along the reference model's greedy continuations.

    ``continuations``: the reference's continuations from an earlier call
    (``reference_continuations``), so that evaluating several models against one reference
    generates them once.

    Definition, exactly:

    1. Each benign prompt is formatted with ``format_prompt`` and tokenized with ``tokenizer``
       (the evaluated model's; the reference must share its vocabulary).
    2. The **reference** model continues it greedily for up to ``max_new_tokens`` tokens, stopping
       after its first end-of-sequence token (which is kept). Call the continuation
       ``c_1 … c_T`` (``T >= 1``).
    3. Both models are run teacher-forced on the same tokens ``prompt + c_1 … c_{T-1}``. At each of
       the ``T`` positions that predict ``c_t`` (the last prompt token up to ``c_{T-1}``) we take
       the full next-token distributions ``p_ref`` and ``p_model`` (softmax of the logits in fp32)
       and compute ``KL(p_ref ‖ p_model) = Σ_v p_ref(v) · (log p_ref(v) − log p_model(v))`` in
       nats.
    4. The reported value is the mean over **all** such positions of all prompts (a token-weighted
       mean, so long continuations weigh more than short ones). ``per_prompt`` holds each
       prompt's own mean.

    It is 0 for identical models and grows as the evaluated model's predictions drift from the
    reference's on the reference's own text.
    """
    prompt_ids = encode_prompts(tokenizer, prompts)
    if continuations is None:
        continuations = _continuations(
            reference, tokenizer, prompt_ids, max_new_tokens, batch_size, progress
        )
    if len(continuations) != len(prompt_ids):
        raise InputError(
            f"{len(continuations)} reference continuations for {len(prompt_ids)} prompts",
            hint="compute the continuations for these prompts (reference_continuations)",
        )
    cont_ids = [list(c) for c in continuations]
    pad_id = resolve_pad_token_id(tokenizer)

    def run(indices: list[int]) -> list[tuple[float, int]]:
        # Drop the last continuation token: nothing predicts from it.
        seqs = [(prompt_ids[i] + cont_ids[i])[:-1] for i in indices]
        ids, mask = _right_pad(seqs, pad_id)
        with torch.inference_mode():
            ref_logp = _log_probs(reference, ids, mask)
            model_logp = _log_probs(model, ids, mask).to(ref_logp.device)
            _check_vocab(ref_logp, model_logp)
            kl = (ref_logp.exp() * (ref_logp - model_logp)).sum(-1).cpu()
        return [
            _span_sum(kl[row], len(prompt_ids[i]) - 1, len(cont_ids[i]))
            for row, i in enumerate(indices)
        ]

    sums = run_batched(run, list(range(len(prompt_ids))), batch_size, desc="KL", progress=progress)
    total = sum(s for s, _ in sums)
    tokens = sum(n for _, n in sums)
    return KLResult(mean=total / tokens, tokens=tokens, per_prompt=[s / n for s, n in sums])


def reference_continuations(
    reference: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: BatchSize = "auto",
    progress: bool = False,
) -> list[list[int]]:
    """The reference's greedy continuation of each prompt (token ids), as ``kl_to_reference``
    defines them; pass them back to it to reuse them."""
    prompt_ids = encode_prompts(tokenizer, prompts)
    return _continuations(reference, tokenizer, prompt_ids, max_new_tokens, batch_size, progress)


def _continuations(
    reference: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: BatchSize,
    progress: bool,
) -> list[list[int]]:
    return generate_from_ids(
        reference,
        tokenizer,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
        desc="reference continuations",
    )


def _log_probs(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(_logits(model, ids, mask).float(), dim=-1)


def _check_vocab(ref: torch.Tensor, model: torch.Tensor) -> None:
    if ref.shape[-1] != model.shape[-1]:
        raise InputError(
            f"the reference model has {ref.shape[-1]} output tokens and the model {model.shape[-1]}",
            hint="compare against a reference with the same tokenizer and vocabulary",
        )


def _span_sum(values: torch.Tensor, start: int, length: int) -> tuple[float, int]:
    return float(values[start : start + length].double().sum()), length


def perplexity(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[Any],
    *,
    max_length: int = 512,
    batch_size: BatchSize = "auto",
    progress: bool = False,
) -> PerplexityResult:
    """Perplexity of ``model`` on benign responses, response tokens only.

    Each pair is laid out exactly as for the optimization losses (``build_batches``: formatted
    prompt + response, labels ``-100`` except response tokens, truncated to ``max_length``).
    The result is ``exp(total NLL / number of response tokens)`` over all pairs (token-weighted).
    """
    if not pairs:
        raise InputError(
            "no benign pairs with responses to compute perplexity on",
            hint="pass a benign set whose rows have a response",
        )

    def run(chunk: list[Any]) -> list[tuple[float, int]]:
        totals = []
        for batch in build_batches(tokenizer, chunk, batch_size=len(chunk), max_length=max_length):
            totals.extend(_batch_nll(model, batch))
        return totals

    sums = run_batched(run, list(pairs), batch_size, desc="perplexity", progress=progress)
    tokens = sum(n for _, n in sums)
    if tokens == 0:
        raise InputError(
            "the benign responses contain no tokens after truncation",
            hint="raise max_length or use longer responses",
        )
    mean_nll = sum(s for s, _ in sums) / tokens
    return PerplexityResult(perplexity=math.exp(mean_nll), tokens=tokens, mean_nll=mean_nll)


def _batch_nll(model: Any, batch: dict[str, torch.Tensor]) -> list[tuple[float, int]]:
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.inference_mode():
        logits = _logits(model, ids, mask).float()
    labels = batch["labels"].to(logits.device)[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels.clamp(min=0), reduction="none")
    keep = labels != -100
    sums = (nll * keep).double().sum(-1).cpu().tolist()
    return list(zip(sums, keep.sum(-1).cpu().tolist(), strict=True))
