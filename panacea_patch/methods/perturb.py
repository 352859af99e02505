"""Run the optimized methods (closed form, Panacea) on a loaded model, and ρ search by KL."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import PatchConfig
from ..data import build_batches, data_digest, load_pairs
from ..errors import InputError
from ..kernels import ops
from ..modeling import LoadedModel, freeze_except, require_targets
from ..objectives import BenignReference, Objective, mean_kl, to_device
from ..targets import Target
from .optimize import PerturbationState, closed_form, panacea_ascent

log = logging.getLogger("panacea_patch")


def _disabled(src: str | None) -> bool:
    return src is None or src.strip().lower() in ("", "none", "off")


@dataclass
class AlignmentData:
    """Batches for each role (the 'optimize' halves) and their digests for provenance."""

    harmful: list[dict]
    refusal: list[dict]
    benign: list[dict]
    heldout_benign: list[dict]
    digests: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, tokenizer: Any, cfg: PatchConfig) -> AlignmentData:
        fields = dict(
            prompt_field=cfg.prompt_field, response_field=cfg.response_field, limit=cfg.max_examples
        )
        digests: dict[str, str] = {}
        counts: dict[str, int] = {}
        batches: dict[str, list[dict]] = {}
        roles = {"harmful": cfg.harmful, "refusal": cfg.refusal, "benign": cfg.benign}
        for role, src in roles.items():
            if _disabled(src):
                batches[role] = []
                continue
            pairs = load_pairs(src, role=role, split="optimize", **fields)  # type: ignore[arg-type]
            digests[role], counts[role] = data_digest(pairs), len(pairs)
            batches[role] = build_batches(
                tokenizer,
                pairs,
                batch_size=cfg.batch_size,
                max_length=cfg.max_length,
                shuffle_seed=cfg.seed,
            )
        if not batches["harmful"]:
            raise InputError(
                "the harmful set is required for this method", hint="pass --harmful SRC"
            )
        heldout: list[dict] = []
        if not _disabled(cfg.benign) and cfg.max_kl is not None:
            pairs = load_pairs(cfg.benign, role="benign", split="evaluate", **fields)  # type: ignore[arg-type]
            heldout = build_batches(
                tokenizer, pairs, batch_size=cfg.batch_size, max_length=cfg.max_length
            )
        return cls(
            batches["harmful"], batches["refusal"], batches["benign"], heldout, digests, counts
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

    def summary(self) -> dict[str, Any]:
        return {
            "rho": self.rho,
            "eps_norm": self.eps_norm,
            "harmful_grad_norm": self.grad_norm,
            "h_initial": self.h_initial,
            "history": self.history,
            "rho_search": self.rho_search,
        }


class PerturbationRun:
    """Owns the live model, w₀/ε state and the objective for one patch."""

    def __init__(
        self,
        lm: LoadedModel,
        targets: list[Target],
        cfg: PatchConfig,
        data: AlignmentData,
    ) -> None:
        self.lm, self.cfg, self.data = lm, cfg, data
        params = require_targets(lm, [t.name for t in targets])
        freeze_except(lm, params)
        if cfg.gradient_checkpointing:
            _enable_checkpointing(lm.model)
        stored = {t.name: t.dtype for t in targets}
        self.state = PerturbationState(params, budget=cfg.budget, rho=1.0, stored_dtypes=stored)
        dev = lm.device
        benign = [to_device(b, dev) for b in data.benign[: max(cfg.steps, 1)]]
        # Reference log-probs are taken now, at ε = 0, before any weight moves.
        if benign and not cfg.benign_is_task:
            self.benign: Any = BenignReference(benign).compute(lm.model)
        else:
            self.benign = benign or None
        self.heldout = (
            BenignReference([to_device(b, dev) for b in data.heldout_benign]).compute(lm.model)
            if data.heldout_benign
            else None
        )

    @property
    def target_norm(self) -> float:
        return math.sqrt(sum(v * v for v in self.state.w_norms.values()))

    def run(self, rho: float, progress: Callable[[], None] | None = None) -> OptimizationOutcome:
        """Compute ε for budget ρ (the method in the config); live weights end at w₀ + ε."""
        st, cfg, dev = self.state, self.cfg, self.lm.device
        st.rho = rho
        total = self.target_norm or 1.0
        st.rho_t = {n: rho * v / total for n, v in st.w_norms.items()}
        st.restore()
        harmful = [to_device(b, dev) for b in self.data.harmful]
        cf = closed_form(st, self.lm.model, harmful, device=dev, progress=progress)
        history: list[dict[str, float]] = []
        if cfg.method == "panacea" and cfg.steps > 0:
            objective = Objective(
                harmful=harmful,
                refusal=[to_device(b, dev) for b in self.data.refusal],
                benign=self.benign,
                alpha=cfg.alpha,
                beta=cfg.beta,
                h_max=cfg.h_max,
            )
            history = panacea_ascent(
                st,
                self.lm.model,
                objective,
                steps=cfg.steps,
                step_size=cfg.step_size,
                init_grad_norm=cf["grad_norm"],
                progress=progress,
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
        )

    def heldout_kl(self) -> float:
        if self.heldout is None:
            raise InputError("--max-kl needs benign prompts", hint="pass --benign SRC")
        return mean_kl(self.lm.model, self.heldout)


def _enable_checkpointing(model: Any) -> None:
    # HF models only checkpoint in training mode; keep dropout off so ε sees deterministic losses.
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()


def search_rho(
    run: PerturbationRun,
    max_kl: float,
    *,
    start: float,
    max_trials: int = 10,
    progress: Callable[[], None] | None = None,
) -> tuple[float, list[dict[str, float]]]:
    """Largest ρ whose held-out benign KL ≤ ``max_kl``: geometric search, then bisection.

    Returns the chosen ρ and the path of (ρ, KL) trials. Runs are deterministic, so the caller
    re-runs the method at the chosen ρ instead of keeping a second copy of ε around.
    """
    path: list[dict[str, float]] = []
    lo, hi, rho = 0.0, math.inf, start
    for _ in range(max_trials):
        run.run(rho, progress)
        kl = run.heldout_kl()
        ok = kl <= max_kl
        path.append({"rho": rho, "kl": kl, "ok": float(ok)})
        log.info("max-kl search: rho=%.4g kl=%.4g (%s)", rho, kl, "ok" if ok else "over")
        if ok:
            lo = rho
        else:
            hi = rho
        if lo > 0 and hi != math.inf and (hi - lo) / hi < 0.1:
            break
        if hi == math.inf:
            rho = rho * 2
        elif lo == 0.0:
            rho = rho / 4
        else:
            rho = (lo + hi) / 2
    if lo == 0.0:
        raise InputError(
            f"no rho down to {rho:.3g} keeps the benign KL <= {max_kl}",
            hint="raise --max-kl or pass an explicit --rho",
        )
    return lo, path
