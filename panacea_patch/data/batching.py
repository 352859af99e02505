"""Collation into padded tensors: right padding for training, left padding for generation.

The caller's tokenizer is never modified. When it has no pad token, padding uses its EOS id
(or 0 without one): padded positions have attention 0 and label -100, so the id only has to be a
valid token. Generation code should pass ``resolve_pad_token_id(tokenizer)`` as
``pad_token_id`` to ``generate`` for the same reason.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

import torch

from panacea_patch.data.formatting import IGNORE_INDEX, EncodedPair, encode_pair, encode_prompt
from panacea_patch.errors import InputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from panacea_patch.data.pairs import Pair

Batch = dict[str, torch.Tensor]


def resolve_pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id used for padding: the pad token, else EOS, else 0."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def _pad(rows: Sequence[Sequence[int]], value: int, side: Literal["left", "right"]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            target = out[i, width - len(row) :] if side == "left" else out[i, : len(row)]
            target.copy_(torch.tensor(row, dtype=torch.long))
    return out


def _mask(rows: Sequence[Sequence[int]], side: Literal["left", "right"]) -> torch.Tensor:
    return _pad([[1] * len(r) for r in rows], 0, side)


def _chunks(n: int, batch_size: int) -> list[range]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return [range(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def collate(encoded: Sequence[EncodedPair], pad_token_id: int) -> Batch:
    """Right-pad encoded pairs into ``input_ids``, ``attention_mask`` and ``labels``."""
    ids = [e.input_ids for e in encoded]
    return {
        "input_ids": _pad(ids, pad_token_id, "right"),
        "attention_mask": _mask(ids, "right"),
        "labels": _pad([e.labels for e in encoded], IGNORE_INDEX, "right"),
    }


def truncate_response(encoded: EncodedPair, response_tokens: int | None) -> EncodedPair:
    """Keep the prompt and only the first ``response_tokens`` response tokens.

    Whether a model refuses or complies is decided in its first few words, so the losses that
    steer it need only those; the rest of a long response costs compute and teaches nothing.
    """
    if response_tokens is None:
        return encoded
    keep = encoded.prompt_length + response_tokens
    return EncodedPair(encoded.input_ids[:keep], encoded.labels[:keep], encoded.prompt_length)


def build_batches(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[Pair],
    *,
    batch_size: int,
    max_length: int = 256,
    shuffle_seed: int | None = None,
    response_tokens: int | None = None,
    by_length: bool = False,
) -> list[Batch]:
    """Encode pairs (see ``encode_pair``) and collate them into right-padded training batches.

    Order follows ``pairs`` unless ``shuffle_seed`` is given, which shuffles deterministically.
    ``response_tokens`` keeps only the first N response tokens of each pair. ``by_length``
    groups pairs of similar length into the same batch (so padding costs almost nothing) and
    then shuffles the order of the batches with ``shuffle_seed``.
    """
    if not pairs:
        raise InputError("no pairs to batch", hint="load at least one pair")
    encoded = [
        truncate_response(encode_pair(tokenizer, pair, max_length), response_tokens)
        for pair in pairs
    ]
    order = list(range(len(encoded)))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    if by_length:
        # Stable sort: ties keep the shuffled order, so the batches still mix sources.
        order.sort(key=lambda i: len(encoded[i].input_ids))
    pad_id = resolve_pad_token_id(tokenizer)
    batches = [
        collate([encoded[order[i]] for i in chunk], pad_id)
        for chunk in _chunks(len(order), batch_size)
    ]
    if by_length and shuffle_seed is not None:
        random.Random(shuffle_seed + 1).shuffle(batches)
    return batches


#: Shorter shared prefixes are not worth a second forward call.
MIN_PREFIX = 4


def prefix_length(batch: Batch) -> int:
    """Leading columns that every row of ``batch`` holds, identical and attended; 0 when there
    are too few to be worth sharing or fewer than two rows. At least one column stays out, so
    the rows' own pass is never empty."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if ids.shape[0] < 2 or ids.shape[1] < 2:
        return 0
    same = (ids == ids[:1]).all(0) & mask.bool().all(0)
    n = min(int(same.int().cumprod(0).sum()), ids.shape[1] - 1)
    return n if n >= MIN_PREFIX else 0


def batch_tokens(batch: Batch, *, share: bool) -> int:
    """Tokens one forward pass over ``batch`` computes (padding included)."""
    rows, cols = batch["input_ids"].shape
    shared = prefix_length(batch) if share else 0
    return rows * cols - (rows - 1) * shared


def count_tokens(batches: Sequence[Batch], *, share: bool = False) -> int:
    """Tokens a forward pass over ``batches`` computes, padding included; with ``share``, each
    batch's shared prefix once (``panacea_patch.shared_prefix``)."""
    return sum(batch_tokens(b, share=share) for b in batches)


def build_generation_batches(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    batch_size: int,
    *,
    max_length: int | None = None,
) -> list[Batch]:
    """Formatted prompts as left-padded ``input_ids`` + ``attention_mask`` batches, in order.

    Left padding puts every prompt's last token at the end of the row, where ``generate``
    continues. ``max_length`` keeps the last tokens of longer prompts.
    """
    if not prompts:
        raise InputError("no prompts to batch", hint="load at least one prompt")
    encoded = [encode_prompt(tokenizer, prompt, max_length) for prompt in prompts]
    pad_id = resolve_pad_token_id(tokenizer)
    batches = []
    for chunk in _chunks(len(encoded), batch_size):
        rows = [encoded[i] for i in chunk]
        batches.append(
            {"input_ids": _pad(rows, pad_id, "left"), "attention_mask": _mask(rows, "left")}
        )
    return batches


T = TypeVar("T")


def draw_passes(rng: random.Random, pool: Sequence[T], n: int) -> list[T]:
    """``n`` items of ``pool``: a shuffled pass, distinct while the pool lasts, then further passes."""
    out: list[T] = []
    while len(out) < n:
        batch = list(pool)
        rng.shuffle(batch)
        out.extend(batch[: n - len(out)])
    return out
