"""One patch run: choose the targets, draw or optimize ε, write atomically, evaluate.

Data flows one way: source → loaded model + targets → objective → optimizer → writer.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from . import guard
from .atomic import atomic_output_dir
from .budget import (
    DELTA_SHARE,
    RISE,
    RiseRule,
    budget_note,
    delta_norm,
    planned_steps,
)
from .checkpoint import ShardReader, copy_aux_files, write_patched
from .config import PatchConfig
from .errors import InputError
from .kernels import ops
from .measure import MeasuringTransform, finish_shares, rho_scale_warning
from .methods.apply import EpsTransform, MergedBase
from .options import eval_config
from .progress import progress_bar
from .provenance import (
    command_line,
    metadata_entry,
    now_iso,
    package_versions,
    read_provenance,
    write_provenance,
)
from .publish import write_card
from .result import PatchResult
from .safetensors_io import StreamingWriter
from .source import ResolvedSource, adapter_base
from .targets import Target, select_targets

log = logging.getLogger("panacea_patch")

# Calibrated on the demo organism's development data (docs/RESULTS.md, "Calibration").
DEFAULT_RHO_REL = {"full": 0.1, "adapter": 0.12}
DELTA_FILE = "panacea_delta.safetensors"


class PatchJob:
    """Holds the state of one run; ``plan`` is cheap (dry run), ``execute`` does the work."""

    def __init__(
        self, cfg: PatchConfig, src: ResolvedSource, *, progress: bool, token: str | None
    ) -> None:
        self.cfg, self.src, self.progress, self.token = cfg, src, progress, token
        self.lm: Any = None
        self.merged: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        self.grad_share: dict[str, float] = {}

    def plan(self, out: Path | None) -> PatchResult:
        cfg = self.cfg
        if out is not None and self.src.kind == "adapter":
            adapter_base(self.src)
            if cfg.merge_adapter:
                self._load_model()  # merging switches the written checkpoint to the base's
        with ShardReader(self.src) as reader:
            self.targets = select_targets(
                reader.infos(),
                config=self.src.config,
                adapter=self.src.kind == "adapter",
                pattern=cfg.targets,
            )
        self.result = PatchResult(
            output=str(out.resolve()) if out is not None else None,
            method=cfg.method,
            rho=cfg.rho,
            rho_rel=cfg.rho_rel,
            realized_norm=None,
            num_target_tensors=len(self.targets),
            num_target_params=sum(t.numel for t in self.targets),
            seconds=0.0,
            dry_run=out is None,
            seed=cfg.seed,
            source=source_dict(self.src),
            targets=[target_dict(t) for t in self.targets],
            backend=ops.backend(),
        )
        if out is None:
            from .plan import build_plan

            with ShardReader(self.src) as reader:
                self.result.plan = build_plan(cfg, self.src, self.targets, reader.infos())
        return self.result

    def execute(self, out: Path) -> None:
        cfg = self.cfg
        if (cfg.method != "random" or cfg.eval) and self.lm is None:
            self._load_model()
        before = self._evaluate_before() if cfg.eval else None
        with ShardReader(self.src) as reader:
            self._write(reader, self._transform(reader), out)
        if before is not None:
            self._evaluate_after(out, before)

    # --- model and ε ----------------------------------------------------------------------

    def _load_model(self) -> None:
        from .modeling import load_model

        cfg = self.cfg
        self.lm = load_model(
            self.src,
            device=cfg.device,
            dtype=cfg.dtype,
            merge_adapter=cfg.merge_adapter,
            trust_remote_code=cfg.trust_remote_code,
            device_map=cfg.device_map,
            max_memory=cfg.max_memory,
            token=self.token,
        )
        if self.lm.merged:
            self.src = self.lm.source
            self.merged = {t: p.detach() for t, p in self.lm.parameters_by_tensor().items()}

    def _transform(self, reader: ShardReader) -> Any:
        from .methods.random import RandomTransform, noise_offsets

        cfg, result = self.cfg, self.result
        if cfg.method == "random":
            from .modeling import pick_device

            result.rho = self._rho_random(reader)
            device = pick_device(cfg.device)
            transform = RandomTransform(self.targets, rho=result.rho, seed=cfg.seed, device=device)
            result.noise_generator = transform.generator
            return transform
        outcome = self._optimize()
        if self.merged:
            # The live target weights now hold w0 + ε; the merge's own values are in w0.
            self.merged.update(self.run.state.w0)
        result.rho = outcome.rho
        result.optimization = {**outcome.summary(), "answer_kl_weight": self.run.answer_kl_weight}
        self.grad_share = outcome.grad_share
        return EpsTransform(
            outcome.eps, rounding=cfg.rounding, seed=cfg.seed, offsets=noise_offsets(self.targets)
        )

    def _rho_random(self, reader: ShardReader) -> float:
        cfg = self.cfg
        if cfg.max_kl is not None:
            raise InputError(
                "--max-kl needs an optimized method", hint="use --method panacea, or pass --rho"
            )
        if cfg.rho is not None:
            return cfg.rho
        weights = (self.merged[t.name] if self.merged else reader.get(t.name) for t in self.targets)
        return self._from_rel(math.sqrt(sum(float(ops.multi_sumsq([w])) for w in weights)))

    def _from_rel(self, target_norm: float) -> float:
        rel = self.cfg.rho_rel if self.cfg.rho_rel is not None else DEFAULT_RHO_REL[self.src.kind]
        self.result.target_weight_norm = target_norm
        self.result.rho_rel = rel
        return rel * target_norm

    def _optimize(self) -> Any:
        from .methods.perturb import AlignmentData, PerturbationRun
        from .methods.rho_search import search_rho

        cfg = self.cfg
        data = AlignmentData.load(self.lm.tokenizer, cfg)
        self.extra["data"] = {"digests": data.digests, "counts": data.counts, "split": "optimize"}
        # A ρ chosen by the rise rule starts mild and needs fewer steps (budget.py); knowing it
        # now keeps the benign reference to the batches those steps use.
        steps = planned_steps(cfg, kind=self.src.kind, merged=bool(self.merged))
        run = PerturbationRun(self.lm, self.targets, cfg, data, steps=steps)
        per_run = run.passes_per_run(steps)
        with progress_bar(
            total=per_run, desc="optimizing", unit="pass", enabled=self.progress
        ) as bar:
            if cfg.max_kl is not None:
                # The search starts where the default budget would be, on any model's scale.
                start = self._default_rho(run)
                rho, path, outcome = search_rho(
                    run,
                    cfg.max_kl,
                    start=start,
                    steps=steps,
                    progress=bar.update,
                    # Each trial is a whole run: the bar's total grows as the search goes on.
                    before_trial=lambda k: setattr(bar, "total", max(bar.total or 0, k * per_run)),
                )
                trials = sum(1 for point in path if not point.get("probe"))
                bar.total = trials * run.passes_per_run(steps)
                self.result.rho_rule = (
                    f"--max-kl {cfg.max_kl:g}, searched from: {self.result.rho_rule}"
                )
            else:
                rho = cfg.rho if cfg.rho is not None else self._default_rho(run)
                path, outcome = [], None
            if outcome is None:
                outcome = run.run(rho, progress=bar.update, steps=steps)
            if isinstance(rho, RiseRule) and rho.capped:
                self.result.rho_rule += " (the cap applied)"
            verdict = guard.measure(run, outcome.rho, cfg)
            if guard.stopped(verdict) and not cfg.force and cfg.rho is None and cfg.rho_rel is None:
                outcome, verdict = guard.refit(run, verdict, cfg, steps=steps, bar=bar)
                self.result.rho_rule += guard.refit_note(verdict)
            if self.result.rho_rule is not None:
                self.result.rho_rule += budget_note(run.state, outcome.rho, run.target_norm)
            # Early stopping makes the ascent shorter than planned: close the bar at its end.
            bar.total = bar.n
        outcome.rho_search = path
        self.run = run
        self.extra["guard"] = self.result.guard = guard.enforce(verdict, cfg)
        return outcome

    def _default_rho(self, run: Any) -> Any:
        """ρ when the user gave none: scale-aware (README, "How large a perturbation").

        - ``--rho-rel``, or a LoRA adapter (0.12 of its A/B norm): relative to the weights;
        - a full model whose base is known (``--base-model``): a share of the fine-tuning
          delta ‖w − w_base‖, which is what the attack moved;
        - otherwise: the ρ at which the closed form raises the harmful loss by ``RISE`` nats
          to first order (ρ·‖∇h‖), capped at ``rho_rel`` 0.1.
        """
        result = self.result
        if self.cfg.rho_rel is not None or self.src.kind == "adapter":
            # An adapter keeps the answer KL (budget.ANSWER_KL_WEIGHT says why).
            rho = self._from_rel(run.target_norm)
            norm = "|A,B| (the LoRA adapter's own tensors)" if self.cfg.rho_rel is None else "|w|"
            result.rho_rule = (
                f"{result.rho_rel:g} x {norm} (= {result.rho_rel:g} x {run.target_norm:.4g})"
            )
            return rho
        result.target_weight_norm = run.target_norm
        delta = delta_norm(self.src, self.cfg.base_model, self.merged, self.targets, self.token)
        if delta is not None:
            result.rho_rule = f"{DELTA_SHARE} x |w - w_base| (= {DELTA_SHARE} x {delta:.4g})"
            run.default_to_whole_sequence_kl()
            return DELTA_SHARE * delta
        cap = DEFAULT_RHO_REL["full"] * run.target_norm
        result.rho_rule = f"{RISE} nats / |grad h|, at most {DEFAULT_RHO_REL['full']} x |w|"
        return RiseRule(cap)

    # --- writing --------------------------------------------------------------------------

    def _write(self, reader: ShardReader, transform: Any, out: Path) -> None:
        cfg, result = self.cfg, self.result
        record = self._record()
        total = sum(i.nbytes for i in reader.infos().values())
        with (
            atomic_output_dir(out, overwrite=cfg.overwrite, source=self.src.path) as tmp,
            progress_bar(total=total, desc="writing", unit="B", enabled=self.progress) as bar,
        ):
            delta = _delta_writer(reader, self.targets, tmp) if cfg.save_delta else None
            measuring = MeasuringTransform(transform, self.targets, delta=delta)
            # With --merge-adapter, ε is measured from the merged weights, not the base's.
            outer = MergedBase(measuring, self.merged) if self.merged else measuring
            try:
                report = write_patched(
                    reader, tmp, outer, metadata=metadata_entry(record), progress=bar.update
                )
            except BaseException:
                if delta is not None:
                    delta.abort()
                raise
            if delta is not None:
                delta.close()
                record["delta_file"] = DELTA_FILE
            copy_aux_files(self.src.path, tmp)
            result.realized_norm = finish_shares(measuring.stats)
            for stats in measuring.stats:
                stats.grad_share = self.grad_share.get(stats.name)
            result.layers = [s.to_dict() for s in measuring.stats]
            too_large = rho_scale_warning(result.rho, measuring.stats)
            if too_large:
                log.warning(too_large)
                result.warnings.append(too_large)
            record.update(
                noise_generator=result.noise_generator,
                warnings=result.warnings,
                rho=result.rho,
                rho_rel=result.rho_rel,
                realized_norm=result.realized_norm,
                target_weight_norm=result.target_weight_norm,
                optimization=result.optimization,
                layers=result.layers,
                output_files=report.output_hashes,
            )
            record["source"]["files"] = report.input_hashes
            write_provenance(tmp, record)
            write_card(tmp, source_dir=self.src.path)
        _warn_if_vanished(result)

    def _record(self) -> dict[str, Any]:
        cfg, result = self.cfg, self.result
        versions = package_versions()
        return {
            "tool": "panacea-patch",
            "version": versions["panacea-patch"],
            "created": now_iso(),
            "command": command_line(),
            "source": source_dict(self.src),
            "method": cfg.method,
            "config": cfg.to_dict(),
            "seed": cfg.seed,
            "rho": result.rho,
            "targets": {"count": result.num_target_tensors, "params": result.num_target_params},
            "backend": result.backend,
            "versions": versions,
            **self.extra,
        }

    # --- evaluation -----------------------------------------------------------------------

    def _eval_config(self) -> Any:
        return eval_config(self.cfg, progress=self.progress, max_examples=self.cfg.max_examples)

    def _evaluate_before(self) -> Any:
        from .evaluation import evaluate

        return evaluate(self.lm.model, self.lm.tokenizer, self._eval_config())

    def _evaluate_after(self, out: Path, before: Any) -> None:
        from .evaluation import compare_reports, evaluate
        from .modeling import load_model

        # The reference for KL is the unpatched model: put the original weights back.
        if getattr(self, "run", None) is not None:
            self.run.state.restore(persistent=True)
        # Evaluate what was written (rounded to the stored dtype), not the live fp32 weights.
        patched = load_model(
            out,
            device=self.cfg.device,
            dtype=self.cfg.dtype,
            trust_remote_code=self.cfg.trust_remote_code,
            token=self.token,
        )
        after = evaluate(
            patched.model, patched.tokenizer, self._eval_config(), reference=self.lm.model
        )
        self.result.metrics = compare_reports(before, after)
        self.result.reports = (before, after)
        record = read_provenance(out) or {}
        record["metrics"] = self.result.metrics
        write_provenance(out, record)
        write_card(out, source_dir=self.src.path)


def _delta_writer(reader: ShardReader, targets: list[Target], tmp: Path) -> StreamingWriter:
    """ε's file, laid out in the order the writer meets the targets (shard by shard)."""
    wanted = {t.name for t in targets}
    order = [n for _, names in reader.shards() for n in names if n in wanted]
    import torch

    layout = [(n, torch.float32, reader.info(n).shape) for n in order]
    return StreamingWriter(
        tmp / DELTA_FILE, layout, {"format": "pt", "content": "w_patched - w_source"}
    )


def _warn_if_vanished(result: PatchResult) -> None:
    if result.rho and result.realized_norm is not None and result.realized_norm < 0.5 * result.rho:
        log.warning(
            "realized |w' - w| = %.4g is well below rho = %.4g: most of the perturbation "
            "vanished when rounding to the stored dtype; use a larger rho or --rounding stochastic",
            result.realized_norm,
            result.rho,
        )


def source_dict(src: ResolvedSource) -> dict[str, Any]:
    return {
        "spec": src.spec,
        "path": str(src.path),
        "kind": src.kind,
        "repo_id": src.repo_id,
        "revision": src.revision,
        "commit_sha": src.commit_sha,
        "base_model": src.base_model,
        # A GGUF source: the file's path, sha256, size, quantization, dequantized, stored dtype.
        **({"gguf": src.gguf} if src.gguf else {}),
    }


def target_dict(t: Target) -> dict[str, Any]:
    return {
        "name": t.name,
        "shape": list(t.shape),
        "numel": t.numel,
        "layer": t.layer,
        "module": t.module,
    }
