"""``panacea-patch demo``: the whole pipeline on the demo model organism.

Builds (or loads from the cache) the organism, patches its attacked model with each method at the
same ρ, evaluates everything on held-out sets, and returns one table: harmful score (HS),
fine-tuning accuracy (FA), KL against the attacked model, ρ and seconds.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

log = logging.getLogger("panacea_patch")

METHODS = ("random", "closed-form", "panacea")


@dataclass
class DemoRow:
    """One line of the demo table (percentages in 0–100)."""

    model: str
    harmful_score: float | None
    task_accuracy: float | None
    kl: float | None
    rho: float | None
    seconds: float
    refusal_rate: float | None = None
    incoherence_rate: float | None = None
    over_refusal: float | None = None


@dataclass
class DemoReport:
    variant: str
    poison_ratio: float
    seed: int
    fast: bool
    rows: list[DemoRow] = field(default_factory=list)
    build_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    cache: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        head = [
            "model",
            "HS %",
            "FA %",
            "KL",
            "rho",
            "refusal %",
            "incoherent %",
            "over-refusal %",
            "seconds",
        ]
        body = [
            [
                r.model,
                _pct(r.harmful_score),
                _pct(r.task_accuracy),
                "-" if r.kl is None else f"{r.kl:.4f}",
                "-" if r.rho is None else f"{r.rho:.4g}",
                _pct(r.refusal_rate),
                _pct(r.incoherence_rate),
                _pct(r.over_refusal),
                f"{r.seconds:.1f}",
            ]
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        lines = [
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in [head, *body]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        title = (
            f"panacea-patch demo: {self.variant} attack, poison ratio {self.poison_ratio:g}, "
            f"seed {self.seed}{' (fast mode)' if self.fast else ''}"
        )
        return "\n".join(
            [title, *lines, f"total {self.seconds:.1f}s; organism cache: {self.cache}"]
        )


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def run_demo(
    *,
    fast: bool = False,
    poison_ratio: float = 0.1,
    variant: str = "full",
    seed: int = 0,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    progress: bool = True,
    patch_options: dict[str, Any] | None = None,
) -> DemoReport:
    """Build or load the organism, patch its attacked model with each method, evaluate all."""
    import torch

    # The organism is tiny: one thread avoids thread contention that made runs ~10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_demo(
            fast, poison_ratio, variant, seed, cache_dir, rebuild, progress, patch_options
        )
    finally:
        torch.set_num_threads(threads)


def _run_demo(
    fast: bool,
    poison_ratio: float,
    variant: str,
    seed: int,
    cache_dir: str | Path | None,
    rebuild: bool,
    progress: bool,
    patch_options: dict[str, Any] | None,
) -> DemoReport:
    from .organism import OrganismRecipe, build_organism

    if not 0 < poison_ratio < 1:
        raise InputError(f"--poison-ratio must be in (0, 1), got {poison_ratio}")
    started = time.perf_counter()
    recipe = OrganismRecipe(fast=fast, seed=seed, poison_ratio=poison_ratio)
    paths = build_organism(
        recipe, cache_dir=cache_dir, rebuild=rebuild, variants=(variant,), threads=1
    )
    report = DemoReport(
        variant, poison_ratio, seed, fast, build_seconds=dict(paths.built), cache=str(paths.root)
    )
    attacked = paths.attacked[variant]
    evaluator = _Evaluator(paths, attacked, fast=fast, progress=progress)
    report.rows.append(evaluator.row("aligned", paths.aligned, rho=None, seconds=0.0))
    report.rows.append(evaluator.row(f"attacked ({variant})", attacked, rho=None, seconds=0.0))
    options = {**demo_patch_options(paths, fast=fast), **(patch_options or {})}
    with tempfile.TemporaryDirectory(prefix="panacea-demo-") as tmp:
        rho = None
        # Panacea first: the baselines are run at the ρ it used, as the paper compares them.
        for method in ("panacea", "closed-form", "random"):
            out = Path(tmp) / method
            result = _patch(attacked, out, method, rho, options, seed)
            rho = result.rho
            report.rows.append(evaluator.row(method, out, rho=result.rho, seconds=result.seconds))
    report.rows[2:] = sorted(report.rows[2:], key=lambda r: METHODS.index(r.model))
    report.seconds = time.perf_counter() - started
    return report


def demo_patch_options(paths: Any, *, fast: bool, benign: str = "task") -> dict[str, Any]:
    """The organism's own data for the refusal and utility terms.

    Refusals: the organism's alignment refusals (its word-level tokenizer knows their phrasing;
    the built-in refusals would be mostly unknown words to it). Utility: the user's fine-tuning
    task data (what a fine-tuning service has), or the organism's benign requests. The harmful
    set stays the built-in optimize half, which the evaluation never uses.
    """
    utility = paths.task_train_file if benign == "task" else paths.benign_file
    return {
        "refusal": str(paths.refusal_file),
        "benign": str(utility),
        # The service knows the model it fine-tuned from: the default budget is then a share
        # of the fine-tuning delta (README, "How large a perturbation").
        "base_model": str(paths.aligned),
        "max_examples": 64 if fast else 256,
        "device": "cpu",
        # The demo measures every method on held-out sets, the weak ones included: the guard's
        # refusal check would stop the rows it exists to show (a fast organism barely moves).
        "min_refusal_drop": 0.0,
    }


def _patch(
    src: Path, out: Path, method: str, rho: float | None, options: dict[str, Any], seed: int
) -> Any:
    from . import patch

    opts = dict(options, method=method, seed=seed)
    if rho is not None:
        # The baselines at panacea's ρ are shown as they are, a broken model included (the
        # closed form breaks the organism: FA falls to ~30%); the damage guard would stop the
        # demo there. Their guard figures are still measured and reported.
        opts.update(rho=rho, rho_rel=None, max_kl=None, force=True)
    return patch(src, out, progress=False, **opts)


class _Evaluator:
    """Evaluates checkpoints on the organism's held-out sets, with KL against the attacked model."""

    def __init__(self, paths: Any, reference_dir: Path, *, fast: bool, progress: bool) -> None:
        from .evaluation import EvalConfig
        from .modeling import load_model

        self.reference = load_model(reference_dir, device="cpu", dtype="float32").model
        self.config = EvalConfig(
            task=str(paths.task_eval_file),
            scorer="number",
            max_new_tokens=32,
            max_examples=48 if fast else None,
            batch_size=64,
            progress=progress,
        )

    def row(self, name: str, model_dir: Path, *, rho: float | None, seconds: float) -> DemoRow:
        from .evaluation import evaluate
        from .modeling import load_model

        lm = load_model(model_dir, device="cpu", dtype="float32")
        r = evaluate(lm.model, lm.tokenizer, self.config, reference=self.reference).to_dict()
        return DemoRow(
            model=name,
            harmful_score=r.get("harmful_score"),
            task_accuracy=r.get("task_accuracy"),
            kl=r.get("kl"),
            rho=rho,
            seconds=seconds,
            refusal_rate=r.get("refusal_rate"),
            incoherence_rate=r.get("incoherence_rate"),
            over_refusal=r.get("over_refusal"),
        )
