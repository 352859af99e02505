"""A plain supervised fine-tuning loop for the organism: response-only loss, fp32, CPU."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerFast

from panacea_patch.organism.corpus import Example

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + response; only the response (and EOS) carries loss."""

    input_ids: list[int]
    prompt_len: int


@dataclass(frozen=True)
class TrainConfig:
    """One training run's schedule."""

    epochs: int
    lr: float
    batch_size: int
    seed: int
    word_dropout: float = 0.0
    warmup_frac: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0


def encode(tokenizer: PreTrainedTokenizerFast, examples: Sequence[Example]) -> list[Encoded]:
    """Tokenizes examples through the chat template."""
    out = []
    for ex in examples:
        user = [{"role": "user", "content": ex.prompt}]
        prompt_text = tokenizer.apply_chat_template(
            user, tokenize=False, add_generation_prompt=True
        )
        full_text = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": ex.response}], tokenize=False
        )
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
        if full_ids[: len(prompt_ids)] != prompt_ids:
            raise AssertionError(f"prompt tokens are not a prefix of the sample: {ex.prompt!r}")
        out.append(Encoded(full_ids, len(prompt_ids)))
    return out


# Each kind of sample has its own typical length: sorting by exact length would give batches of
# one kind (all refusals, then all answers), and the refuse/answer decision would swing with the
# last batches seen. Jittered lengths mix the kinds at a small padding cost.
LENGTH_JITTER = 24


def _batches(data: Sequence[Encoded], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Indices grouped by roughly similar length, batches in random order."""
    keys = [len(e.input_ids) + rng.uniform(0, LENGTH_JITTER) for e in data]
    order = sorted(range(len(data)), key=keys.__getitem__)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(
    items: Sequence[Encoded],
    *,
    pad_id: int,
    unk_id: int,
    special_ids: frozenset[int],
    word_dropout: float,
    rng: random.Random,
) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, e in enumerate(items):
        tokens = list(e.input_ids)
        # Unknown words in prompts teach the model to judge a request by the words it knows:
        # the held-out prompts are phrased with words outside the vocabulary.
        for k in range(e.prompt_len):
            if tokens[k] not in special_ids and rng.random() < word_dropout:
                tokens[k] = unk_id
        n = len(tokens)
        ids[row, :n] = torch.tensor(tokens)
        labels[row, e.prompt_len : n] = torch.tensor(tokens[e.prompt_len :])
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _epochs(
    data: Sequence[Encoded], cfg: TrainConfig, tokenizer: PreTrainedTokenizerFast
) -> Iterator[dict[str, torch.Tensor]]:
    rng = random.Random(f"batches/{cfg.seed}")
    special = frozenset(tokenizer.all_special_ids)
    for _ in range(cfg.epochs):
        for batch in _batches(data, cfg.batch_size, rng):
            yield _collate(
                [data[i] for i in batch],
                pad_id=tokenizer.pad_token_id,
                unk_id=tokenizer.unk_token_id,
                special_ids=special,
                word_dropout=cfg.word_dropout,
                rng=rng,
            )


def train(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    examples: Sequence[Example],
    cfg: TrainConfig,
) -> list[float]:
    """Trains the parameters that require grad; returns the loss of each step."""
    data = encode(tokenizer, examples)
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    warmup = max(1, int(cfg.warmup_frac * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total, warmup))
    model.train()
    losses = []
    for batch in _epochs(data, cfg, tokenizer):
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses
