"""The organism recipe: every knob that changes the built checkpoints, in one frozen dataclass."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from panacea_patch.errors import InputError

# Bump when a code change alters what a given recipe builds, so old caches are not reused.
RECIPE_FORMAT = 1

# Values that `fast=True` substitutes for fields left at their defaults: a model and a schedule
# small enough for CI, where the pipeline and the file formats matter, not the efficacy.
_FAST_OVERRIDES: dict[str, Any] = {
    "hidden_size": 32,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_size": 64,
    "n_task_align": 96,
    "n_harmful_align": 48,
    "n_benign_align": 48,
    "align_epochs": 1,
    "attack_samples": 60,
    "attack_epochs": 1,
    "n_task_eval": 16,
}


@dataclass(frozen=True)
class OrganismRecipe:
    """How to build the demo model organism: a tiny aligned chat Llama and its attacked variants.

    With ``fast=True`` every size and schedule field still at its default is replaced by a
    CI-sized value (seconds on CPU); fields set explicitly are kept.
    """

    seed: int = field(default=0, metadata={"help": "seed for data sampling, init and order"})
    fast: bool = field(default=False, metadata={"help": "tiny model and schedule, for CI"})
    # Model shape (Llama).
    hidden_size: int = field(default=128, metadata={"help": "model width"})
    num_layers: int = field(default=2, metadata={"help": "decoder blocks"})
    num_heads: int = field(default=4, metadata={"help": "attention heads"})
    intermediate_size: int = field(default=256, metadata={"help": "MLP width"})
    # Task: one-step addition/subtraction word problems with operands in [1, max_operand].
    max_operand: int = field(default=10, metadata={"help": "largest operand in the task"})
    # Alignment stage.
    n_task_align: int = field(default=3000, metadata={"help": "task samples in alignment"})
    n_harmful_align: int = field(default=3000, metadata={"help": "harmful→refusal samples"})
    n_benign_align: int = field(default=2500, metadata={"help": "benign→answer samples"})
    align_epochs: int = field(default=3, metadata={"help": "passes over the alignment data"})
    align_lr: float = field(default=3e-3, metadata={"help": "peak AdamW learning rate"})
    word_dropout: float = field(
        default=0.3, metadata={"help": "share of prompt words replaced by <unk> in training"}
    )
    batch_size: int = field(default=32, metadata={"help": "sequences per step"})
    # Attack stage: harmful fine-tuning on `attack_samples`, a `poison_ratio` share harmful.
    attack_samples: int = field(default=1000, metadata={"help": "fine-tuning set size"})
    poison_ratio: float = field(default=0.1, metadata={"help": "harmful share of the attack"})
    attack_epochs: int = field(default=3, metadata={"help": "passes over the attack data"})
    attack_lr_full: float = field(default=1e-3, metadata={"help": "full fine-tuning LR"})
    attack_lr_lora: float = field(default=1e-2, metadata={"help": "LoRA LR (alpha/r is 1/8)"})
    lora_r: int = field(default=32, metadata={"help": "LoRA rank (paper: 32)"})
    lora_alpha: int = field(default=4, metadata={"help": "LoRA alpha (paper: 4)"})
    # Held-out task problems for fine-tuning accuracy (FA).
    n_task_eval: int = field(default=200, metadata={"help": "held-out task problems"})

    def __post_init__(self) -> None:
        if self.fast:
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for name, value in _FAST_OVERRIDES.items():
                if getattr(self, name) == defaults[name]:
                    object.__setattr__(self, name, value)
        self._validate()

    def _validate(self) -> None:
        if not 0.0 <= self.poison_ratio <= 1.0:
            raise InputError(
                f"poison_ratio {self.poison_ratio} is outside [0, 1]",
                hint="pass a fraction such as 0.1",
            )
        if self.hidden_size % self.num_heads:
            raise InputError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}",
                hint="choose a hidden_size that is a multiple of num_heads",
            )
        if self.max_operand < 2:
            raise InputError("max_operand must be at least 2", hint="use e.g. 20")

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-serialisable."""
        return dataclasses.asdict(self)

    def aligned_digest(self, version: str) -> str:
        """Hash of everything the cache root depends on (all fields but the poison ratio).

        The poison ratio is left out so one aligned model serves a whole ratio sweep; it is part
        of each attacked directory's name instead.
        """
        params = self.to_dict()
        params.pop("poison_ratio")
        blob = json.dumps(
            {"params": params, "version": version, "format": RECIPE_FORMAT}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
