"""The fine-tuning data: the user's pairs, optional poison for benchmarking, and collation."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data import Batch, Pair, build_batches, collate, data_digest, encode_pair, load_pairs
from ..data.batching import draw_passes, resolve_pad_token_id
from ..data.formatting import EncodedPair
from ..errors import InputError
from .config import FinetuneConfig


def load_train_pairs(cfg: FinetuneConfig) -> list[Pair]:
    """The user's fine-tuning pairs; every one needs a response to learn from."""
    if not cfg.train:
        raise InputError("no training data given", hint="pass --train FILE_OR_DATASET")
    pairs = load_pairs(
        cfg.train,
        role="benign",
        prompt_field=cfg.prompt_field,
        response_field=cfg.response_field,
        limit=cfg.max_train_examples,
    )
    for pair in pairs:
        if pair.response is None:
            raise InputError(
                f"{pair.where}: a fine-tuning example has no response",
                hint="give every row a response (or name its field with --response-field)",
            )
    return pairs


def poison_count(n_clean: int, ratio: float) -> int:
    """Harmful samples to add so that they make up ``ratio`` of the mixed set."""
    return round(ratio * n_clean / (1.0 - ratio)) if ratio > 0 else 0


def draw_poison(pool: Sequence[Pair], n: int, seed: int) -> list[Pair]:
    """``n`` pairs from ``pool``: distinct while the pool lasts, then further shuffled passes."""
    return draw_passes(random.Random(f"poison/{seed}"), pool, n)


@dataclass
class FinetuneData:
    """Everything the run trains on, with counts and digests for provenance."""

    train: list[Pair]
    poison: list[Pair]
    harmful: list[Pair]
    digests: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, cfg: FinetuneConfig) -> FinetuneData:
        """Loads the training data, the poison (``--poison-ratio``) and the harmful set."""
        train = load_train_pairs(cfg)
        poison: list[Pair] = []
        n_poison = poison_count(len(train), cfg.poison_ratio)
        if n_poison:
            poison = draw_poison(_harmful_half(cfg, cfg.poison_source), n_poison, cfg.seed)
        harmful = _harmful_half(cfg, cfg.harmful) if cfg.panacea else []
        data = cls(train, poison, harmful)
        data.digests = {k: data_digest(v) for k, v in data.roles().items() if v}
        return data

    def roles(self) -> dict[str, list[Pair]]:
        return {"train": self.train, "poison": self.poison, "harmful": self.harmful}

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.roles().items()}

    def mixed(self) -> list[Pair]:
        """The training set as the Trainer sees it (it shuffles every epoch itself)."""
        return self.train + self.poison


def _harmful_half(cfg: FinetuneConfig, src: str) -> list[Pair]:
    # The 'optimize' half, so that the 'evaluate' half --eval scores stays unseen.
    return load_pairs(
        src,
        role="harmful",
        split="optimize",
        prompt_field=cfg.prompt_field,
        response_field=cfg.response_field,
    )


def encode_dataset(tokenizer: Any, pairs: Sequence[Pair], max_length: int) -> list[dict[str, Any]]:
    """Each pair as ``{"input_ids", "labels"}`` lists (labels -100 off the response)."""
    out = []
    for pair in pairs:
        enc = encode_pair(tokenizer, pair, max_length)
        out.append({"input_ids": enc.input_ids, "labels": enc.labels})
    return out


class PairCollator:
    """Right-pads encoded examples into a training batch, as ``build_batches`` does."""

    def __init__(self, tokenizer: Any) -> None:
        self.pad_id = resolve_pad_token_id(tokenizer)

    def __call__(self, features: Sequence[dict[str, Any]]) -> Batch:
        encoded = [EncodedPair(list(f["input_ids"]), list(f["labels"]), 0) for f in features]
        return collate(encoded, self.pad_id)


def harmful_batches(
    tokenizer: Any,
    pairs: Sequence[Pair],
    *,
    batch_size: int,
    max_length: int,
    seed: int,
    limit: int | None = None,
) -> list[Batch]:
    """Harmful batches in a seeded order; ``limit`` keeps the first pairs of that order."""
    order = list(pairs)
    random.Random(f"harmful/{seed}").shuffle(order)
    if limit is not None:
        order = order[:limit]
    return build_batches(tokenizer, order, batch_size=batch_size, max_length=max_length)


__all__ = [
    "FinetuneData",
    "PairCollator",
    "draw_poison",
    "encode_dataset",
    "harmful_batches",
    "load_train_pairs",
    "poison_count",
]
