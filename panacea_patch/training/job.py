"""One ``finetune`` run: load, fine-tune with Panacea, add ε, write atomically, evaluate, push.

```python
job = FinetuneJob(cfg, "org/base", "out/")
job.prepare()   # source, model (+ LoRA), data; evaluates BASE first with --eval
job.train()     # PanaceaTrainer.train()
job.finish()    # ε (recomputed at the final weights, or the last step's) added to the live weights
job.write()     # the checkpoint, panacea_patch.json, the card; evaluation; then the push
```
:func:`finetune` runs all four; the steps are public so that tests and notebooks can look at the
weights in between.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_output_dir, check_output_path
from ..errors import InputError, RuntimeFailure
from ..kernels import ops
from ..measure import TensorStats, finish_shares
from ..provenance import command_line, metadata_entry, now_iso, package_versions, write_provenance
from ..source import resolve_source
from ..targets import block_index, module_type
from .config import FinetuneConfig
from .data import FinetuneData, PairCollator, encode_dataset, harmful_batches
from .trainer import PanaceaArguments, PanaceaTrainer, summarize

log = logging.getLogger("panacea_patch")

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


class FinetuneJob:
    """The state of one run; call ``prepare``, ``train``, ``finish``, ``write`` in order."""

    def __init__(
        self,
        cfg: FinetuneConfig,
        base: str | Path,
        out: str | Path,
        *,
        progress: bool = True,
        token: str | None = None,
    ) -> None:
        self.cfg, self.base, self.out = cfg, str(base), Path(out)
        self.progress, self.token = progress, token
        self.started = time.perf_counter()
        self.train_seconds = 0.0
        self.trainer: PanaceaTrainer | None = None
        self.eps: dict[str, torch.Tensor] | None = None
        self.final_info: dict[str, Any] = {}
        self.stats: list[TensorStats] = []
        self.before: Any = None
        self.record: dict[str, Any] = {}

    # --- prepare ------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Resolve BASE, check --out, load the data and the model (wrapped in LoRA or not)."""
        from ..modeling import load_model

        cfg = self.cfg
        self.src = resolve_source(
            self.base, revision=cfg.revision, allow_pickle=cfg.allow_pickle, token=self.token
        )
        if self.src.kind == "adapter":
            raise InputError(
                f"BASE {self.base} is a PEFT adapter; finetune starts from a full model",
                hint="pass the base model, or merge the adapter first (patch --merge-adapter)",
            )
        check_output_path(self.out, overwrite=cfg.overwrite, source=self.src.path)
        self.data = FinetuneData.load(cfg)  # before the model: bad data fails fast
        self.lm = load_model(
            self.src,
            device=cfg.device,
            dtype=cfg.dtype,
            trust_remote_code=cfg.trust_remote_code,
            token=self.token,
        )
        self.tokenizer = self.lm.tokenizer
        if cfg.eval:
            self.before = self._evaluate(self.lm.model)
        self.model = (
            _with_lora(self.lm.model, cfg) if self.adapter else _all_trainable(self.lm.model)
        )

    @property
    def adapter(self) -> bool:
        """Whether the output is a LoRA adapter (``--lora``) rather than a full model."""
        return self.cfg.lora

    # --- train --------------------------------------------------------------------------------

    def train(self) -> None:
        """Fine-tune with :class:`PanaceaTrainer` (plain fine-tuning with ``--no-panacea``)."""
        cfg = self.cfg
        dataset = encode_dataset(self.tokenizer, self.data.mixed(), cfg.max_length)
        harmful = (
            harmful_batches(
                self.tokenizer,
                self.data.harmful,
                batch_size=cfg.batch_size,
                max_length=cfg.max_length,
                seed=cfg.seed,
            )
            if cfg.panacea
            else []
        )
        panacea = PanaceaArguments(
            rho=cfg.rho,
            lam=cfg.lam,
            h_max=cfg.h_max,
            keep_last_eps=cfg.last_step_eps,
            enabled=cfg.panacea,
        )
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="panacea-train-") as workdir:
            self.trainer = PanaceaTrainer(
                model=self.model,
                args=training_arguments(cfg, self.lm.device, Path(workdir)),
                train_dataset=dataset,
                data_collator=PairCollator(self.tokenizer),
                harmful_batches=harmful,
                panacea=panacea,
            )
            _quiet_stdout(self.trainer, progress=self.progress)
            self.train_output = self.trainer.train()
        self.train_seconds = time.perf_counter() - start
        self.model.eval()

    # --- finish -------------------------------------------------------------------------------

    def finish(self) -> dict[str, torch.Tensor] | None:
        """Add ε to the live trainable weights; returns ε by parameter name (None for SFT)."""
        if not self.cfg.panacea:
            return None
        if self.trainer is None:
            raise RuntimeFailure("finish() called before train()", hint="call train() first")
        params = self.trainable()
        if self.cfg.last_step_eps:
            eps = self.trainer.last_eps
            if not eps:
                raise RuntimeFailure(
                    "no training step produced a perturbation (the harmful gradient was zero)",
                    hint="drop --last-step-eps to recompute it, or check the harmful data",
                )
            step = self.trainer.last_eps_step
            h = next((r.h for r in self.trainer.history if r.step == step), None)
            self.final_info = {"mode": "last-step", "step": step, "h": h}
        else:
            eps = self._recompute_eps(params)
        self.eps = eps
        names = self._output_names()
        dtypes = self._output_dtypes(names)
        self.stats = apply_eps(params, eps, names=names, dtypes=dtypes)
        self.final_info["eps_norm"] = math.sqrt(
            sum(float(ops.multi_sumsq([e])) for e in eps.values())
        )
        return eps

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        """The trainable parameters of the live model, by parameter name."""
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def _recompute_eps(self, params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
        """ε = ρ·∇h/‖∇h‖ at the final weights, over a larger slice of the harmful set."""
        from ..methods.optimize import PerturbationState, closed_form

        cfg = self.cfg
        batches = harmful_batches(
            self.tokenizer,
            self.data.harmful,
            batch_size=cfg.batch_size,
            max_length=cfg.max_length,
            seed=cfg.seed + 1,  # another order than training's cycle: a fresh sample of h
            limit=cfg.final_eps_examples,
        )
        state = PerturbationState(params, budget="global", rho=cfg.rho)
        device = next(iter(params.values())).device
        cf = closed_form(state, self.model, batches, device=device)
        state.restore()  # closed_form wrote w + ε; apply_eps re-applies it with measurements
        self.final_info = {
            "mode": "recomputed",
            "examples": min(cfg.final_eps_examples, len(self.data.harmful)),
            "harmful_grad_norm": cf["grad_norm"],
            "h": cf["h"],
        }
        return state.eps

    def _output_names(self) -> dict[str, str]:
        """Parameter name → the tensor name it is saved under."""
        if self.adapter:
            # PEFT stores adapter tensors without the adapter's name ('default').
            return {n: n.replace(".default.", ".") for n in self.trainable()}
        return {n: self.lm.param_to_tensor.get(n, n) for n in self.trainable()}

    def _output_dtypes(self, names: dict[str, str]) -> dict[str, torch.dtype]:
        """The dtype each tensor is saved in: BASE's stored dtype for a full model."""
        params = self.trainable()
        if self.adapter:
            return {n: p.dtype for n, p in params.items()}
        from ..checkpoint import ShardReader

        with ShardReader(self.src) as reader:
            infos = reader.infos()
        return {
            n: infos[names[n]].dtype if names[n] in infos else p.dtype for n, p in params.items()
        }

    # --- write --------------------------------------------------------------------------------

    def write(self) -> FinetuneResult:
        """Write the output atomically (weights, provenance, evaluation, card), then push."""
        from .output import write_adapter, write_full

        cfg = self.cfg
        self.record = self._record()
        with atomic_output_dir(self.out, overwrite=cfg.overwrite, source=self.src.path) as tmp:
            meta = metadata_entry(self.record)
            if self.adapter:
                files = write_adapter(self.model, self.tokenizer, tmp, self.src, meta)
            else:
                files = write_full(self.model, self.lm, tmp, meta)
            self.record["output_files"] = files
            self._write_history(tmp)
            write_provenance(tmp, self.record)
            if self.before is not None:
                self._evaluate_after(tmp)
            if cfg.panacea:
                _write_card(tmp, self.src.path)
        result = self._result()
        if cfg.push_to_hub:
            result.push = self._push(cfg.push_to_hub)
        result.seconds = time.perf_counter() - self.started
        return result

    def _record(self) -> dict[str, Any]:
        cfg, trainer = self.cfg, self.trainer
        from ..job import source_dict

        versions = package_versions()
        params = self.trainable()
        history = trainer.history if trainer is not None else []
        record: dict[str, Any] = {
            "tool": "panacea-patch",
            "version": versions["panacea-patch"],
            "created": now_iso(),
            "command": command_line(),
            "source": source_dict(self.src),
            "method": METHOD if cfg.panacea else BASELINE_METHOD,
            "output_kind": "adapter" if self.adapter else "full",
            "config": cfg.to_dict(),
            "seed": cfg.seed,
            "rho": cfg.rho if cfg.panacea else None,
            "lambda": cfg.lam if cfg.panacea else None,
            "h_max": cfg.h_max if cfg.panacea else None,
            "targets": {"count": len(params), "params": sum(p.numel() for p in params.values())},
            "data": self.data.digests,
            "data_counts": self.data.counts(),
            "training": {
                "steps": trainer.state.global_step if trainer is not None else 0,
                "train_loss": getattr(self.train_output, "training_loss", None),
                "seconds": round(self.train_seconds, 3),
                "last_steps": summarize(history[-10:]) if history else {},
                "log_file": HISTORY_FILE if history else None,
            },
            "backend": ops.backend(self.lm.device),
            "versions": versions,
        }
        if self.adapter:
            record["lora"] = {
                "r": cfg.lora_r,
                "alpha": cfg.lora_alpha,
                "dropout": cfg.lora_dropout,
                "target_modules": cfg.target_modules,
            }
        if cfg.panacea:
            record["final_eps"] = self.final_info
            record["eps_norm"] = self.final_info.get("eps_norm")
            record["realized_norm"] = finish_shares(self.stats) if self.stats else None
            record["layers"] = [s.to_dict() for s in self.stats]
        return record

    def _write_history(self, out: Path) -> None:
        history = self.trainer.history if self.trainer is not None else []
        if history:
            lines = "".join(json.dumps(r.to_dict()) + "\n" for r in history)
            (out / HISTORY_FILE).write_text(lines)

    def _result(self) -> FinetuneResult:
        rec, training = self.record, self.record["training"]
        return FinetuneResult(
            output=str(self.out.resolve()),
            method=rec["method"],
            output_kind=rec["output_kind"],
            steps=training["steps"],
            seconds=0.0,
            train_seconds=self.train_seconds,
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

    # --- evaluation and push ------------------------------------------------------------------

    def _eval_config(self) -> Any:
        from ..evaluation import EvalConfig

        cfg = self.cfg
        return EvalConfig(
            judge=cfg.judge,
            max_new_tokens=cfg.max_new_tokens,
            task=cfg.eval_task,
            scorer=cfg.eval_scorer,
            max_examples=cfg.eval_max_examples,
            seed=cfg.seed,
            progress=self.progress,
            allow_pickle=cfg.allow_pickle,
        )

    def _evaluate(self, model: Any) -> Any:
        from ..evaluation import evaluate

        return evaluate(model, self.tokenizer, self._eval_config())

    def _evaluate_after(self, out: Path) -> None:
        """Evaluate what was written (the stored dtype), with the training state released."""
        from ..evaluation import compare_reports
        from ..modeling import load_model

        self.trainer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        written = load_model(
            out,
            device=self.cfg.device,
            dtype="float32" if self.lm.device.type == "cpu" else "auto",
            trust_remote_code=self.cfg.trust_remote_code,
            token=self.token,
        )
        after = self._evaluate(written.model)
        self.record["metrics"] = compare_reports(self.before, after)
        write_provenance(out, self.record)

    def _push(self, repo_id: str) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.panacea:
            from ..publish import publish

            pushed = publish(
                self.out,
                repo_id,
                private=cfg.private,
                revision=cfg.hub_revision,
                create_pr=cfg.create_pr,
                commit_message=cfg.commit_message,
                token=self.token,
                source_dir=self.src.path,
            )
        else:  # no perturbation: the Panacea card would misdescribe a plain fine-tune
            from ..hub import push_folder

            pushed = push_folder(
                self.out,
                repo_id,
                private=cfg.private,
                revision=cfg.hub_revision,
                create_pr=cfg.create_pr,
                commit_message=cfg.commit_message,
                token=self.token,
            )
        return asdict(pushed)


def finetune(
    base: str | Path,
    out: str | Path,
    *,
    config: FinetuneConfig | None = None,
    progress: bool = True,
    token: str | None = None,
    **options: Any,
) -> FinetuneResult:
    """Fine-tune BASE on ``train`` data with Panacea and write ``w + ε`` to ``out``.

    Options are the fields of :class:`FinetuneConfig` (``train=`` is required), given as
    ``config=`` or as keyword arguments (which override ``config``); ``lora=False`` trains and
    writes the full model instead of a LoRA adapter. Nothing is left at ``out`` if the run fails.
    """
    cfg = config if config is not None else FinetuneConfig(**options)
    if config is not None and options:
        cfg = FinetuneConfig(**{**cfg.to_dict(), **options})
    job = FinetuneJob(cfg, base, out, progress=progress, token=token)
    job.prepare()
    job.train()
    job.finish()
    return job.write()


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


def apply_eps(
    params: dict[str, torch.nn.Parameter],
    eps: dict[str, torch.Tensor],
    *,
    names: dict[str, str],
    dtypes: dict[str, torch.dtype],
) -> list[TensorStats]:
    """``w ← w + ε`` per tensor through ``ops.project_apply_``, measuring what survives rounding
    to each tensor's saved dtype (one tensor's copies at a time)."""
    stats = []
    with torch.no_grad():
        for n, p in params.items():
            e = eps.get(n)
            if e is None:
                continue
            before = p.detach().to(dtypes[n], copy=True)
            ops.project_apply_(e, p.data, p.data, 1.0)
            diff = p.detach().to(dtypes[n]).float() - before.float()
            stats.append(_stats(names[n], p, diff, before))
            del before, diff
    return stats


def _stats(name: str, p: torch.Tensor, diff: torch.Tensor, w: torch.Tensor) -> TensorStats:
    norm_eps = math.sqrt(float(ops.multi_sumsq([diff.contiguous()])))
    norm_w = math.sqrt(float(ops.multi_sumsq([w.float().contiguous()])))
    block = block_index(name)
    return TensorStats(
        name=name,
        layer=block[1] if block else None,
        module=module_type(block[2] if block else name),
        numel=p.numel(),
        norm_eps=norm_eps,
        norm_w=norm_w,
        rel=norm_eps / norm_w if norm_w else 0.0,
    )


def _with_lora(model: Any, cfg: FinetuneConfig) -> Any:
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


def _all_trainable(model: Any) -> Any:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _quiet_stdout(trainer: Any, *, progress: bool) -> None:
    """The Trainer prints its logs on stdout, which belongs to --json: send them to logging."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from .callbacks import LogCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LogCallback(progress=progress))


def _write_card(out: Path, source_dir: Path) -> None:
    """The model card, through ``publish.write_card`` when that module is available."""
    try:
        from ..publish import write_card
    except ImportError:
        log.info("panacea_patch.publish is not available; no model card written")
        return
    write_card(out, source_dir=source_dir)
