"""How a fine-tune run is set up: the TrainingArguments, LoRA (or full) training, the callbacks."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from .config import FinetuneConfig


def training_arguments(cfg: FinetuneConfig, device: torch.device, workdir: Path) -> Any:
    """``TrainingArguments`` for the run; the Trainer writes nothing there (no checkpoints)."""
    from transformers import TrainingArguments

    precision = mixed_precision(cfg, device)
    return TrainingArguments(
        output_dir=str(workdir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim="adamw_torch",
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        seed=cfg.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device.type == "cpu",
        **_checkpointing(cfg.gradient_checkpointing),
    )


def _checkpointing(enabled: bool) -> dict[str, Any]:
    """Activation checkpointing options, under the name this transformers version uses."""
    if not enabled:
        return {}  # passing the option at all warns in transformers 5 (renamed)
    import dataclasses

    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}


def mixed_precision(cfg: FinetuneConfig, device: torch.device) -> str:
    """'bf16', 'fp16' or 'no'; auto picks bf16 on a CUDA device that supports it."""
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def with_lora(model: Any, cfg: FinetuneConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(cfg.seed)  # LoRA A's initialization
    try:
        with warnings.catch_warnings():
            # PEFT asks the model a question transformers 5 renamed; the warning is not the user's.
            warnings.filterwarnings(
                "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
            )
            return get_peft_model(model, config)
    except ValueError as exc:
        raise InputError(
            f"LoRA cannot adapt modules {cfg.lora_targets!r} of this model ({exc})",
            hint="pass --lora-targets with module names of this model "
            "(e.g. query_key_value for GPT-NeoX), or train with --full",
        ) from None


def all_trainable(model: Any) -> Any:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def quiet_stdout(trainer: Any, *, progress: bool) -> None:
    """The Trainer prints its logs on stdout, which belongs to --json: send them to logging."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from .callbacks import LogCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LogCallback(progress=progress))
