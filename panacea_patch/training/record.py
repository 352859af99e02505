"""What a fine-tune run did: its provenance record, the training log file and ``FinetuneResult``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..kernels import ops
from ..measure import finish_shares
from ..provenance import command_line, now_iso, package_versions
from .trainer import summarize

if TYPE_CHECKING:
    from .job import FinetuneJob

METHOD = "panacea-finetune"
BASELINE_METHOD = "sft"
HISTORY_FILE = "panacea_training_log.jsonl"


@dataclass
class FinetuneResult:
    """What a finetune run did. ``to_dict()`` is the CLI's ``--json`` output."""

    output: str
    method: str
    output_kind: str
    steps: int
    seconds: float
    train_seconds: float
    rho: float | None = None
    lam: float | None = None
    eps_norm: float | None = None
    realized_norm: float | None = None
    final_eps: dict[str, Any] = field(default_factory=dict)
    train_loss: float | None = None
    last_steps: dict[str, float] = field(default_factory=dict)
    num_trainable_tensors: int = 0
    num_trainable_params: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    push: dict[str, Any] | None = None
    backend: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_record(job: FinetuneJob) -> dict[str, Any]:
    """The ``panacea_patch.json`` record of a trained (and finished) run."""
    cfg, trainer = job.cfg, job.trainer
    from ..job import source_dict

    versions = package_versions()
    params = job.trainable()
    history = trainer.history if trainer is not None else []
    record: dict[str, Any] = {
        "tool": "panacea-patch",
        "version": versions["panacea-patch"],
        "created": now_iso(),
        "command": command_line(),
        "source": source_dict(job.src),
        "method": METHOD if cfg.panacea else BASELINE_METHOD,
        "output_kind": "adapter" if job.adapter else "full",
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "rho": cfg.rho if cfg.panacea else None,
        "lambda": cfg.lam if cfg.panacea else None,
        "h_max": cfg.h_max if cfg.panacea else None,
        "targets": {"count": len(params), "params": sum(p.numel() for p in params.values())},
        "data": job.data.digests,
        "data_counts": job.data.counts(),
        "training": {
            "steps": trainer.state.global_step if trainer is not None else 0,
            "train_loss": getattr(job.train_output, "training_loss", None),
            "seconds": round(job.train_seconds, 3),
            "last_steps": summarize(history[-10:]) if history else {},
            "log_file": HISTORY_FILE if history else None,
        },
        "backend": ops.backend(job.lm.device),
        "versions": versions,
    }
    if job.adapter:
        record["lora"] = {
            "r": cfg.lora_r,
            "alpha": cfg.lora_alpha,
            "dropout": cfg.lora_dropout,
            "target_modules": cfg.target_modules,
        }
    if cfg.panacea:
        record["final_eps"] = job.final_info
        record["eps_norm"] = job.final_info.get("eps_norm")
        record["realized_norm"] = finish_shares(job.stats) if job.stats else None
        record["layers"] = [s.to_dict() for s in job.stats]
    return record


def write_history(job: FinetuneJob, out: Path) -> None:
    """The per-step training log, one JSON object a line."""
    history = job.trainer.history if job.trainer is not None else []
    if history:
        lines = "".join(json.dumps(r.to_dict()) + "\n" for r in history)
        (out / HISTORY_FILE).write_text(lines)


def result_of(job: FinetuneJob) -> FinetuneResult:
    """The result of a written run, from its record."""
    rec, training = job.record, job.record["training"]
    return FinetuneResult(
        output=str(job.out.resolve()),
        method=rec["method"],
        output_kind=rec["output_kind"],
        steps=training["steps"],
        seconds=0.0,
        train_seconds=job.train_seconds,
        rho=rec["rho"],
        lam=rec["lambda"],
        eps_norm=rec.get("eps_norm"),
        realized_norm=rec.get("realized_norm"),
        final_eps=rec.get("final_eps", {}),
        train_loss=training["train_loss"],
        last_steps=training["last_steps"],
        num_trainable_tensors=rec["targets"]["count"],
        num_trainable_params=rec["targets"]["params"],
        counts=rec["data_counts"],
        source=rec["source"],
        layers=rec.get("layers", []),
        metrics=rec.get("metrics", {}),
        backend=rec["backend"],
    )
