"""Run the optimized methods (closed form, Panacea) on a loaded model, and ρ search by KL."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import shared_prefix
from ..budget import ANSWER_KL_WEIGHT, max_steps
from ..config import PatchConfig
from ..data import IGNORE_INDEX, build_batches, count_tokens, data_digest, load_pairs
from ..errors import InputError
from ..kernels import ops
from ..modeling import LoadedModel, freeze_except, require_targets
from ..objectives import BenignReference, Objective, mean_kl, response_ce, to_device
from ..targets import Target
from .optimize import PerturbationState, closed_form, panacea_ascent

log = logging.getLogger("panacea_patch")


def _disabled(src: str | None) -> bool:
    return src is None or src.strip().lower() in ("", "none", "off")


#: Held-out examples per role for the damage guard and --max-kl (forward passes only).
HELDOUT_EXAMPLES = 96


@dataclass
class AlignmentData:
    """Batches for each role (the 'optimize' halves), held-out batches, and digests."""

    harmful: list[dict]
    refusal: list[dict]
    benign: list[dict]
    heldout_benign: list[dict]
    heldout_refusal: list[dict] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, tokenizer: Any, cfg: PatchConfig) -> AlignmentData:
        digests: dict[str, str] = {}
        counts: dict[str, int] = {}
        batches: dict[str, list[dict]] = {}
        roles = {"harmful": cfg.harmful, "refusal": cfg.refusal, "benign": cfg.benign}
        for role, src in roles.items():
            if _disabled(src):
                batches[role] = []
                continue
            pairs = _pairs(cfg, src, role, "optimize")
            digests[role], counts[role] = data_digest(pairs), len(pairs)
            batches[role] = _batches(tokenizer, cfg, pairs, shuffle_seed=cfg.seed, role=role)
        if not batches["harmful"]:
            raise InputError(
                "the harmful set is required for this method", hint="pass --harmful SRC"
            )
        heldout = {"benign": [], "refusal": []}
        guard = bool(cfg.max_damage_kl or cfg.min_refusal_drop) or cfg.max_kl is not None
        # The guard always measures drift, on the built-in benign prompts if the user gave none.
        sources = {"benign": cfg.benign if not _disabled(cfg.benign) else "builtin:benign"}
        if not _disabled(cfg.refusal):
            sources["refusal"] = cfg.refusal
        if guard:
            for role, src in sources.items():
                pairs = _pairs(cfg, src, role, "evaluate")[:HELDOUT_EXAMPLES]
                heldout[role] = _batches(tokenizer, cfg, pairs, shuffle_seed=None, role=role)
        return cls(
            batches["harmful"],
            batches["refusal"],
            batches["benign"],
            heldout["benign"],
            heldout["refusal"],
            digests,
            counts,
        )

    def tokens(self) -> dict[str, int]:
        """Tokens one forward pass over each role's batches computes (padding included)."""
        roles = {"harmful": self.harmful, "refusal": self.refusal, "benign": self.benign}
        return {role: count_tokens(b) for role, b in roles.items()}


def _pairs(cfg: PatchConfig, src: str, role: str, split: str) -> list[Any]:
    return load_pairs(
        src,
        role=role,  # type: ignore[arg-type]
        split=split,  # type: ignore[arg-type]
        prompt_field=cfg.prompt_field,
        response_field=cfg.response_field,
        limit=cfg.max_examples,
    )


def _answer_weight(cfg: PatchConfig) -> float:
    return ANSWER_KL_WEIGHT if cfg.answer_kl_weight is None else cfg.answer_kl_weight


def _batches(
    tokenizer: Any, cfg: PatchConfig, pairs: list[Any], *, shuffle_seed: int | None, role: str
) -> list[dict]:
    # The token budget is for h and r, which a response's first words decide. The utility
    # term keeps whole responses: a task's answer often comes at the end of its response.
    # Length grouping cuts padding; only task data (a cross-entropy step per batch) keeps
    # shuffled batches, each a fair sample of the task. The KL reference has no such need.
    steered = role in ("harmful", "refusal")
    return build_batches(
        tokenizer,
        pairs,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        shuffle_seed=shuffle_seed,
        response_tokens=(cfg.response_tokens or None) if steered else None,
        by_length=steered,
    )


@dataclass
class OptimizationOutcome:
    eps: dict[str, torch.Tensor]
    rho: float
    grad_norm: float
    grad_share: dict[str, float]
    history: list[dict[str, float]]
    h_initial: float
    rho_search: list[dict[str, float]] = field(default_factory=list)
    eps_norm: float = 0.0
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    budget: str = "global"
    budget_check: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "rho": self.rho,
            "budget": self.budget,
            "budget_check": self.budget_check,
            "eps_norm": self.eps_norm,
            "harmful_grad_norm": self.grad_norm,
            "h_initial": self.h_initial,
            "steps_run": len(self.history),
            "history": self.history,
            "rho_search": self.rho_search,
            "phases": self.phases,
        }


@dataclass
class PhaseCounter:
    """Forward(+backward) passes, tokens and seconds per phase of a run, for ``--json``."""

    phases: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, phase: str, *, passes: int, tokens: int, seconds: float) -> None:
        row = self.phases.setdefault(phase, {"passes": 0, "tokens": 0, "seconds": 0.0})
        row["passes"] += passes
        row["tokens"] += tokens
        row["seconds"] = round(row["seconds"] + seconds, 3)


class PerturbationRun:
    """Owns the live model, w₀/ε state and the objective for one patch."""

    def __init__(
        self,
        lm: LoadedModel,
        targets: list[Target],
        cfg: PatchConfig,
        data: AlignmentData,
        *,
        steps: int | None = None,
    ) -> None:
        """``steps``: the ascent steps the job will ask ``run`` for, when it knows them (the
        rise rule's); the benign reference covers only the batches those steps use. Without
        ``--budget`` the budget is 'auto' until ``budget.choose_budget`` settles it at the
        first closed form."""
        self.lm, self.cfg, self.data = lm, cfg, data
        self.counter = PhaseCounter()
        params = require_targets(lm, [t.name for t in targets])
        freeze_except(lm, params)
        if cfg.gradient_checkpointing:
            _enable_checkpointing(lm.model)
        stored = {t.name: t.dtype for t in targets}
        self.state = PerturbationState(
            params,
            budget=cfg.budget or "auto",
            rho=1.0,
            stored_dtypes=stored,
            model=lm.model,
            offload_w0=getattr(cfg, "offload_w0", False),
        )
        started = time.perf_counter()
        dev = lm.device
        planned = steps if steps is not None else max_steps(cfg.steps)
        benign = [to_device(b, dev) for b in data.benign[: max(planned, 1)]]
        # Reference log-probs are taken now, at ε = 0, before any weight moves.
        if benign and not cfg.benign_is_task:
            self.benign: Any = BenignReference(
                benign,
                head_tokens=None,
                head_weight=_answer_weight(cfg),
            ).compute(lm.model)
        else:
            self.benign = benign or None
        self.heldout = (
            BenignReference([to_device(b, dev) for b in data.heldout_benign]).compute(lm.model)
            if data.heldout_benign
            else None
        )
        self.heldout_refusal = [to_device(b, dev) for b in data.heldout_refusal]
        self.r0 = self._heldout_r() if self.heldout_refusal else None
        reference = (benign if isinstance(self.benign, BenignReference) else []) + (
            data.heldout_benign + data.heldout_refusal
        )
        self.counter.add(
            "reference",
            passes=len(reference),
            tokens=count_tokens(reference, share=self.share_prefix),
            seconds=time.perf_counter() - started,
        )

    @property
    def share_prefix(self) -> bool:
        """Whether forward passes compute each batch's shared prefix once (token counts)."""
        return shared_prefix.supported(self.lm.model)

    @property
    def answer_kl_weight(self) -> float:
        """The weight of the answer-head KL in u (0 when u is task cross-entropy)."""
        return self.benign.head_weight if isinstance(self.benign, BenignReference) else 0.0

    def default_to_whole_sequence_kl(self) -> None:
        """The budget is a share of a known fine-tuning delta: u without the answer head,
        unless the user set ``--answer-kl-weight`` (budget.ANSWER_KL_WEIGHT says why)."""
        if isinstance(self.benign, BenignReference) and self.cfg.answer_kl_weight is None:
            self.benign.head_weight = 0.0

    def passes_per_run(self, steps: int | None = None) -> int:
        """Forward+backward passes one ``run`` makes at most (before early stopping)."""
        steps = steps if steps is not None else max_steps(self.cfg.steps)
        steps = steps if self.cfg.method == "panacea" else 0
        return len(self.data.harmful) + steps * self.objective([]).passes_per_step()

    @property
    def target_norm(self) -> float:
        return math.sqrt(sum(v * v for v in self.state.w_norms.values()))

    def run(
        self,
        rho: float | Callable[[float], float],
        progress: Callable[[int], None] | None = None,
        *,
        steps: int | None = None,
    ) -> OptimizationOutcome:
        """Compute ε for budget ρ (the method in the config); live weights end at w₀ + ε.

        ``rho`` may be a rule from ‖∇h‖ to ρ, applied once the closed form has measured it.
        ``steps`` overrides the config's (whose None means the default, ``max_steps``).
        """
        st, cfg, dev = self.state, self.cfg, self.lm.device
        rule = rho if callable(rho) else None
        st.set_rho(1.0 if callable(rho) else rho)
        st.restore()
        started = time.perf_counter()
        harmful = [to_device(b, dev) for b in self.data.harmful]
        cf = closed_form(st, self.lm.model, harmful, device=dev, progress=progress, rho_rule=rule)
        rho = st.rho
        self.counter.add(
            "closed_form",
            passes=len(harmful),
            tokens=count_tokens(harmful, share=self.share_prefix),
            seconds=time.perf_counter() - started,
        )
        history: list[dict[str, float]] = []
        steps = steps if steps is not None else max_steps(cfg.steps)
        if cfg.method == "panacea" and steps > 0:
            started = time.perf_counter()
            objective = self.objective(harmful)
            history = panacea_ascent(
                st,
                self.lm.model,
                objective,
                steps=steps,
                step_size=cfg.step_size,
                init_grad_norm=cf["grad_norm"],
                patience=cfg.patience,
                progress=progress,
            )
            passes, tokens = objective.cost(len(history), share=self.share_prefix)
            self.counter.add(
                "ascent", passes=passes, tokens=tokens, seconds=time.perf_counter() - started
            )
        eps_norm = math.sqrt(float(ops.multi_sumsq(list(st.eps.values()))))
        return OptimizationOutcome(
            eps=st.eps,
            rho=rho,
            grad_norm=cf["grad_norm"],
            grad_share=cf["grad_share"],
            history=history,
            h_initial=cf["h"],
            eps_norm=eps_norm,
            phases=self.counter.phases,
            budget=st.budget,
            budget_check=st.budget_check,
        )

    def objective(self, harmful: list[dict]) -> Objective:
        dev = self.lm.device
        return Objective(
            harmful=harmful,
            refusal=[to_device(b, dev) for b in self.data.refusal],
            benign=self.benign,
            alpha=self.cfg.alpha,
            beta=self.cfg.beta,
            h_max=self.cfg.h_max,
        )

    def scale_eps(self, factor: float) -> None:
        """ε ← factor·ε in the live model (``--max-kl`` probes a trial's ε at other sizes)."""
        self.state.scale(factor)

    def heldout_kl(self) -> float:
        if self.heldout is None:
            raise InputError("--max-kl needs benign prompts", hint="pass --benign SRC")
        return mean_kl(self.lm.model, self.heldout)

    @torch.no_grad()
    def _heldout_r(self) -> float:
        batches = self.heldout_refusal
        sizes = [int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches]
        total = sum(
            float(response_ce(self.lm.model, b)) * n for b, n in zip(batches, sizes, strict=True)
        )
        return total / max(sum(sizes), 1)

    def damage(self) -> dict[str, float | None]:
        """Held-out benign KL and refusal loss of the live (patched) weights, vs ε = 0."""
        started = time.perf_counter()
        figures: dict[str, float | None] = {
            "heldout_kl": self.heldout_kl() if self.heldout is not None else None,
            "heldout_refusal_loss": self._heldout_r() if self.heldout_refusal else None,
            "heldout_refusal_loss_at_0": self.r0,
        }
        batches = (self.heldout.batches if self.heldout is not None else []) + self.heldout_refusal
        self.counter.add(
            "guard",
            passes=len(batches),
            tokens=count_tokens(batches, share=self.share_prefix),
            seconds=time.perf_counter() - started,
        )
        return figures


def _enable_checkpointing(model: Any) -> None:
    # HF models only checkpoint in training mode; keep dropout off so ε sees deterministic losses.
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
