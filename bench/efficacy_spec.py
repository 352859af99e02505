"""What the efficacy bench evaluates: parts, methods, metrics, settings and the key of each row."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]


DEFAULT_ROWS = REPO / "bench/out/efficacy_rows.jsonl"


DEFAULT_CACHE = REPO / "bench/out/organism-cache"


DEFAULT_RESULTS = REPO / "docs/RESULTS.md"


DEFAULT_PLOT = REPO / "docs/results_rho_sweep.png"


DEFAULT_FINETUNE = REPO / "bench/out/finetune_compare.md"


PARTS = ("grid", "sweep", "builtin", "diagnostics")


METHODS = ("none", "random", "closed-form", "panacea")


METHOD_LABEL = {
    "aligned": "aligned (reference)",
    "none": "none (attacked)",
    "random": "random",
    "closed-form": "closed-form",
    "panacea": "panacea",
}


# Row fields copied from the EvalReport (percentages 0-100, KL in nats/token).
METRICS = {
    "hs": "harmful_score",
    "fa": "task_accuracy",
    "refusal": "refusal_rate",
    "compliance": "compliance_rate",
    "incoherent": "incoherence_rate",
    "over_refusal": "over_refusal",
    "kl": "kl",
    "n_harmful": "n_harmful",
    "n_benign": "n_benign",
    "n_task": "n_task",
}


# The demo's evaluation settings (panacea_patch.demo._Evaluator, non-fast), stated here so a
# row's key can be computed without building the organism.
EVAL_SETTINGS: dict[str, Any] = {
    "harmful": "builtin:harmful",
    "harmful_split": "evaluate",
    "benign": "builtin:benign",
    "benign_split": "evaluate",
    "judge": "keyword",
    "scorer": "number",
    "task": "task_eval.jsonl",
    "max_new_tokens": 32,
    "max_examples": None,
}


# PatchConfig fields that cannot change the perturbation (output handling, Hub, --eval, the
# damage guard, memory placement). base_model is not one of them: it sets the default budget.
_IRRELEVANT = {
    "method",
    "seed",
    "device",
    "device_map",
    "overwrite",
    "save_delta",
    "allow_pickle",
    "trust_remote_code",
    "revision",
    "eval",
    "force",
    "max_damage_kl",
    "min_refusal_drop",
    "max_memory",
    "offload_w0",
    "judge",
    "max_new_tokens",
    "push_to_hub",
    "private",
    "hub_revision",
    "create_pr",
    "commit_message",
    "progress_interval",
}


BEGIN, END = "<!-- efficacy:begin -->", "<!-- efficacy:end -->"


CAL_BEGIN, CAL_END = "<!-- calibration:begin -->", "<!-- calibration:end -->"


FT_BEGIN, FT_END = "<!-- finetune-compare:begin -->", "<!-- finetune-compare:end -->"


# Post-hoc budgets: the script's own default (0.01, patch's pre-calibration default) and the
# calibrated adapter default (0.12): the SFT output is a LoRA adapter.
FINETUNE_CMD = (
    "python bench/finetune_compare.py --variant lora --seed 0 --threads 1 "
    "--patch-rho-rel 0.01 0.12 --cache-dir bench/out/organism-cache "
    "| tee bench/out/finetune_compare.md"
)


def key_of(spec: dict[str, Any]) -> str:
    """A stable hash of a row's full specification (the resume key)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def _stub_paths() -> SimpleNamespace:
    """Stands in for OrganismPaths where only the data files' names matter (keys, rendering)."""
    data = Path("organism-data")
    return SimpleNamespace(
        refusal_file=data / "alignment_refusal.jsonl",
        benign_file=data / "alignment_benign.jsonl",
        task_train_file=data / "task_train.jsonl",
        task_eval_file=data / "task_eval.jsonl",
        aligned=Path("organism-cache") / "aligned",
    )


def patch_options(paths: Any, data: str) -> dict[str, Any]:
    """The options every patch of a part gets (before method, budget and seed).

    ``organism``: the demo's options (the organism's refusals, the user's task data).
    ``builtin``: the same but with the refusal and benign sets left at the tool's defaults.
    """
    from panacea_patch.demo import demo_patch_options

    options = demo_patch_options(paths, fast=False)
    if data == "builtin":
        options.pop("refusal", None)
        options.pop("benign", None)
    return options


def settings_of(options: dict[str, Any], budget: dict[str, Any]) -> dict[str, Any]:
    """The effective PatchConfig fields that determine ε, data paths reduced to file names.

    Read from ``PatchConfig`` at run time, so a change of the calibrated defaults changes the
    key and the affected rows are recomputed rather than silently reused.
    """
    from panacea_patch import job
    from panacea_patch.config import PatchConfig

    cfg = PatchConfig(**{**options, **budget}).to_dict()
    if cfg["rho"] is None and cfg["rho_rel"] is None and cfg["max_kl"] is None:
        # The fallback budget lives in the job, not in PatchConfig: record its value too.
        cfg["rho_rel_default"] = job.DEFAULT_RHO_REL
    out = {}
    for name, value in cfg.items():
        if name in _IRRELEVANT:
            continue
        if isinstance(value, str) and ("/" in value or "\\" in value):
            value = Path(value).name  # the cache location must not change the key
        out[name] = value
    return out


def digest_of(seed: int) -> str:
    """The organism's cache digest for a seed (recipe + package version)."""
    from panacea_patch.organism import OrganismRecipe
    from panacea_patch.organism.build import package_version

    return OrganismRecipe(seed=seed).aligned_digest(package_version())


@dataclasses.dataclass(frozen=True)
class Spec:
    """One model to evaluate: which checkpoint, and (for patched ones) how it was patched."""

    part: str
    seed: int
    poison_ratio: float
    variant: str
    method: str  # aligned | none | random | closed-form | panacea
    data: str = "organism"  # organism | builtin: which refusal/benign sets the patch used
    rho_rel: float | None = None  # None: the default budget (grid, builtin)

    def budget(self) -> dict[str, Any]:
        """Budget options: an explicit rho_rel (sweep) or the defaults (others)."""
        if self.rho_rel is None:
            return {}
        return {"rho_rel": self.rho_rel, "rho": None, "max_kl": None}

    def full(self) -> dict[str, Any]:
        """Everything the row depends on; aligned/attacked rows do not depend on patch settings."""
        spec: dict[str, Any] = {
            "seed": self.seed,
            "poison_ratio": self.poison_ratio,
            "variant": self.variant,
            "model": self.method,
            "organism": digest_of(self.seed),
            "eval": EVAL_SETTINGS,
        }
        if self.method in ("aligned", "none"):
            return spec
        options = patch_options(_stub_paths(), self.data)
        spec.update(
            part=self.part,
            data=self.data,
            settings=settings_of(options, self.budget()),
            # Grid/builtin baselines take panacea's ρ: their key carries panacea's settings.
            rho_from="panacea" if self.rho_rel is None and self.method != "panacea" else "self",
        )
        return spec

    def key(self) -> str:
        return key_of(self.full())


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _since(start: float) -> str:
    return f"{time.perf_counter() - start:.0f}s"
