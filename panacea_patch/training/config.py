"""``FinetuneConfig``: every setting of ``panacea-patch finetune``, each with a description.

The same pattern as :class:`panacea_patch.config.PatchConfig`: one frozen dataclass, whose fields
carry their help text, from which the CLI generates its options. The defaults are the paper's
settings (Panacea, arXiv 2501.18100): ρ = 1, λ = 0.001, lr 2e-5, LoRA r = 32, alpha = 4 on
q/k/v, 20 epochs, batch size 10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .. import options
from ..errors import InputError
from ..options import ConfigFields, Device, opt, shared

LoadDtype = Literal["float32", "bfloat16"]
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]
Scorer = Literal["exact", "contains", "number", "choice"]


@dataclass(frozen=True)
class FinetuneConfig(ConfigFields):
    """All options of ``panacea-patch finetune`` / :func:`panacea_patch.training.finetune`."""

    # --- data ---------------------------------------------------------------------------------
    train: str | None = opt(
        None,
        "The fine-tuning data (prompt, response): a .jsonl/.json/.csv/.parquet file or "
        "hf:org/name[:config][@split]. Required.",
        group="data",
    )
    harmful: str = shared("harmful")
    poison_ratio: float = opt(
        0.0,
        "For benchmarking the attack: mix harmful samples into the training data so that they "
        "make up this share of it (the paper's p; 0.1 is its default attack).",
        group="data",
    )
    poison_source: str = opt(
        "builtin:harmful",
        "Where --poison-ratio draws its harmful samples from. Its 'optimize' half is used, so "
        "the 'evaluate' half that --eval scores stays unseen.",
        group="data",
    )
    prompt_field: str | None = shared("prompt_field")
    response_field: str | None = shared("response_field")
    max_length: int = shared("max_length")
    max_train_examples: int | None = opt(
        None, "Use at most this many training examples (default: all).", group="data"
    )
    # --- the method ---------------------------------------------------------------------------
    panacea: bool = opt(
        True,
        "Fine-tune with Panacea. --no-panacea runs plain fine-tuning with no defence (the "
        "attack baseline) and adds no perturbation.",
        group="method",
    )
    rho: float = opt(
        1.0,
        "rho: L2 norm of the perturbation eps = rho*grad h/|grad h| over all trainable tensors "
        "(paper: 1).",
        group="method",
    )
    lam: float = opt(
        0.001,
        "lambda: weight of the harmful-loss increase h(w+eps) - h(w) in the objective "
        "f(w) - lambda*(h(w+eps) - h(w)) (paper: 0.001).",
        group="method",
        flag="--lambda",
    )
    h_max: float = shared("h_max")
    last_step_eps: bool = opt(
        False,
        "Ship the perturbation of the last training step exactly. Default: recompute it at the "
        "final weights on --final-eps-examples harmful examples (one batch is noisy).",
        group="method",
    )
    final_eps_examples: int = opt(
        200,
        "Harmful examples used to recompute the shipped perturbation after training.",
        group="method",
    )
    # --- training -----------------------------------------------------------------------------
    lora: bool = opt(
        True,
        "Train and ship a PEFT LoRA adapter (--lora, the paper's setting) or the full model "
        "(--full).",
        group="training",
    )
    lora_r: int = opt(32, "LoRA rank (paper: 32). Ignored with --full.", group="training")
    lora_alpha: int = opt(4, "LoRA alpha (paper: 4). Ignored with --full.", group="training")
    lora_dropout: float = opt(0.0, "LoRA dropout.", group="training")
    lora_targets: str = opt(
        "q_proj,k_proj,v_proj",
        "Comma-separated module names LoRA adapts (paper: q, k, v projections).",
        group="training",
    )
    lr: float = opt(2e-5, "Peak learning rate of AdamW (paper: 2e-5).", group="training")
    epochs: float = opt(20.0, "Passes over the training data (paper: 20).", group="training")
    max_steps: int | None = opt(
        None, "Stop after this many optimizer steps (overrides --epochs).", group="training"
    )
    batch_size: int = opt(
        10,
        "Examples per batch, for the training and the harmful data (paper: 10).",
        group="training",
    )
    gradient_accumulation_steps: int = opt(
        1,
        "Micro-batches per optimizer step; the Panacea correction is made once per step.",
        group="training",
    )
    lr_scheduler: Scheduler = opt("linear", "Learning-rate schedule.", group="training")
    warmup_steps: float = opt(
        0.0, "Warm-up steps (a value below 1 is a share of all steps).", group="training"
    )
    weight_decay: float = opt(0.0, "AdamW weight decay.", group="training")
    max_grad_norm: float = opt(
        1.0, "Clip the final update gradient to this norm (0 disables).", group="training"
    )
    logging_steps: int = opt(
        1, "Log f, h(w), h(w+eps) and |grad h| every this many steps.", group="training"
    )
    seed: int = opt(0, "Random seed (data order, LoRA init, poison sampling).")
    # --- compute ------------------------------------------------------------------------------
    device: Device = shared("device")
    dtype: LoadDtype = opt(
        "float32",
        "dtype the weights are trained in. float32 master weights are standard; use "
        "--mixed-precision for speed.",
        group="compute",
    )
    mixed_precision: MixedPrecision = opt(
        "auto",
        "Autocast for forward/backward: auto = bf16 on a CUDA device that supports it, else no.",
        group="compute",
    )
    gradient_checkpointing: bool = shared("gradient_checkpointing")
    # --- checkpoint ---------------------------------------------------------------------------
    revision: str | None = shared("revision", what="BASE")
    allow_pickle: bool = shared("allow_pickle", what="BASE")
    trust_remote_code: bool = shared("trust_remote_code", what="BASE")
    overwrite: bool = shared("overwrite")
    # --- evaluation and publishing ------------------------------------------------------------
    eval: bool = shared("eval", what="BASE")
    judge: str = shared("judge")
    max_new_tokens: int = shared("max_new_tokens")
    eval_task: str | None = opt(
        None,
        "Task file with fields 'prompt' and 'answer' for fine-tuning accuracy in --eval.",
        group="eval",
    )
    eval_scorer: Scorer = opt(
        "contains",
        "How --eval-task answers are scored: exact, contains, number, choice.",
        group="eval",
    )
    eval_max_examples: int | None = opt(
        None, "Evaluate at most this many prompts of each set.", group="eval"
    )
    push_to_hub: str | None = shared("push_to_hub")
    private: bool = shared("private")
    hub_revision: str | None = shared("hub_revision")
    create_pr: bool = shared("create_pr")
    commit_message: str | None = shared("commit_message")
    # --- output -------------------------------------------------------------------------------
    progress_interval: float | None = shared("progress_interval")

    def __post_init__(self) -> None:
        _positive(self, "rho", "lr", "h_max", "epochs")
        _at_least(self, 1, "batch_size", "gradient_accumulation_steps", "logging_steps")
        _at_least(self, 1, "final_eps_examples", "lora_r", "lora_alpha")
        _at_least(self, 8, "max_length")
        for name in ("lam", "weight_decay", "max_grad_norm", "warmup_steps", "lora_dropout"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise InputError(
                    f"{_flag(name)} must be a finite number >= 0, got {getattr(self, name)}"
                )
        if not 0.0 <= self.poison_ratio < 1.0:
            raise InputError(
                f"--poison-ratio must be in [0, 1), got {self.poison_ratio}",
                hint="pass a share such as 0.1",
            )
        for name in ("max_steps", "max_train_examples", "eval_max_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{_flag(name)} must be at least 1, got {value}")
        if not [m for m in self.lora_targets.split(",") if m.strip()]:
            raise InputError("--lora-targets is empty", hint="pass e.g. q_proj,k_proj,v_proj")

    @property
    def target_modules(self) -> list[str]:
        """``lora_targets`` as a list."""
        return [m.strip() for m in self.lora_targets.split(",") if m.strip()]


def _flag(name: str) -> str:
    return {"lam": "--lambda"}.get(name, "--" + name.replace("_", "-"))


def _positive(cfg: FinetuneConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value > 0):
            raise InputError(
                f"{_flag(name)} must be a finite number > 0, got {value}",
                hint=f"pass a positive {_flag(name)}",
            )


def _at_least(cfg: FinetuneConfig, low: int, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < low:
            raise InputError(f"{_flag(name)} must be at least {low}, got {getattr(cfg, name)}")


def example_toml() -> str:
    """The text of ``examples/finetune.toml``: every option, its default and its description."""
    return options.example_toml(FinetuneConfig, "finetune", "BASE")
