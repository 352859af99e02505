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
import logging
import math
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_output_dir, check_output_path
from ..errors import InputError, RuntimeFailure
from ..kernels import ops
from ..measure import TensorStats
from ..options import eval_config, hub_options
from ..progress import progress_interval
from ..provenance import metadata_entry, write_provenance
from ..source import resolve_source
from .config import FinetuneConfig
from .data import FinetuneData, PairCollator, encode_dataset, harmful_batches
from .record import (
    BASELINE_METHOD,
    HISTORY_FILE,
    METHOD,
    FinetuneResult,
    build_record,
    result_of,
    write_history,
)
from .setup import all_trainable, mixed_precision, quiet_stdout, training_arguments, with_lora
from .trainer import PanaceaArguments, PanaceaTrainer
from .weights import apply_eps

log = logging.getLogger("panacea_patch")

# Re-exported: they lived here before the record and the setup got their own modules.
__all__ = [
    "BASELINE_METHOD",
    "HISTORY_FILE",
    "METHOD",
    "FinetuneJob",
    "FinetuneResult",
    "apply_eps",
    "finetune",
    "mixed_precision",
    "training_arguments",
]


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
        self.model = with_lora(self.lm.model, cfg) if self.adapter else all_trainable(self.lm.model)

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
            quiet_stdout(self.trainer, progress=self.progress)
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
        self.record = build_record(self)
        with atomic_output_dir(self.out, overwrite=cfg.overwrite, source=self.src.path) as tmp:
            meta = metadata_entry(self.record)
            if self.adapter:
                files = write_adapter(self.model, self.tokenizer, tmp, self.src, meta)
            else:
                files = write_full(self.model, self.lm, tmp, meta)
            self.record["output_files"] = files
            write_history(self, tmp)
            write_provenance(tmp, self.record)
            if self.before is not None:
                self._evaluate_after(tmp)
            if cfg.panacea:
                _write_card(tmp, self.src.path)
        result = result_of(self)
        if cfg.push_to_hub:
            result.push = self._push(cfg.push_to_hub)
        result.seconds = time.perf_counter() - self.started
        return result

    # --- evaluation and push ------------------------------------------------------------------

    def _eval_config(self) -> Any:
        cfg = self.cfg
        return eval_config(
            cfg,
            progress=self.progress,
            task=cfg.eval_task,
            scorer=cfg.eval_scorer,
            max_examples=cfg.eval_max_examples,
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
        hub = hub_options(self.cfg)
        if self.cfg.panacea:
            from ..publish import publish

            pushed = publish(self.out, repo_id, token=self.token, source_dir=self.src.path, **hub)
        else:  # no perturbation: the Panacea card would misdescribe a plain fine-tune
            from ..hub import push_folder

            pushed = push_folder(self.out, repo_id, token=self.token, **hub)
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
    with progress_interval(cfg.progress_interval):
        job = FinetuneJob(cfg, base, out, progress=progress, token=token)
        job.prepare()
        job.train()
        job.finish()
        return job.write()


def _write_card(out: Path, source_dir: Path) -> None:
    """The model card, through ``publish.write_card`` when that module is available."""
    try:
        from ..publish import write_card
    except ImportError:
        log.info("panacea_patch.publish is not available; no model card written")
        return
    write_card(out, source_dir=source_dir)
