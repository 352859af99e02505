"""The post-hoc objective J(ε) = min(h, h_max) − α·r − β·u (DESIGN.md section 1).

- h: response cross-entropy on harmful pairs (raised by ε), capped at ``h_max`` with no gradient
  above the cap;
- r: response cross-entropy on refusal pairs (kept low, so refusals come back);
- u: utility drift on benign prompts, KL(p_w ‖ p_{w+ε}) per token against reference
  log-probabilities computed once at ε = 0, or cross-entropy on benign responses when the user
  gives task data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX, Batch


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}


def response_ce(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean next-token cross-entropy over response tokens (labels ≠ -100)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift_logits = logits[:, :-1].float()
    shift_labels = batch["labels"][:, 1:]
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def capped(h: torch.Tensor, h_max: float) -> torch.Tensor:
    """min(h, h_max): the gradient is zero once h is above the cap, as in the paper."""
    return torch.clamp(h, max=h_max)


def _positions(batch: Batch) -> torch.Tensor:
    """Next-token positions whose target is a real token (both ends attended)."""
    mask = batch["attention_mask"].bool()
    return mask[:, :-1] & mask[:, 1:]


def _log_probs(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.log_softmax(logits[:, :-1].float(), dim=-1)[_positions(batch)]


@dataclass
class BenignReference:
    """Reference next-token log-probabilities at ε = 0 for each benign batch.

    Stored once (in bf16, at real-token positions only) so the KL term needs no second model and
    no extra forward pass per step.
    """

    batches: list[Batch]
    log_probs: list[torch.Tensor] = field(default_factory=list)

    @torch.no_grad()
    def compute(self, model: torch.nn.Module) -> BenignReference:
        self.log_probs = [_log_probs(model, b).to(torch.bfloat16) for b in self.batches]
        return self

    def kl(self, model: torch.nn.Module, i: int) -> torch.Tensor:
        """Mean per-token KL(p_ref ‖ p_model) on benign batch ``i``."""
        ref = self.log_probs[i].float()
        cur = _log_probs(model, self.batches[i])
        return (ref.exp() * (ref - cur)).sum(-1).mean()


@torch.no_grad()
def mean_kl(model: torch.nn.Module, reference: BenignReference) -> float:
    """Token-weighted mean KL over all reference batches (used by ``--max-kl``)."""
    total, count = 0.0, 0
    for i, lp in enumerate(reference.log_probs):
        total += float(reference.kl(model, i)) * lp.shape[0]
        count += lp.shape[0]
    return total / max(count, 1)


@dataclass
class Objective:
    """J on cycling batches; ``terms(model, step)`` returns J (for backward) and its parts."""

    harmful: Sequence[Batch]
    refusal: Sequence[Batch]
    benign: BenignReference | Sequence[Batch] | None
    alpha: float
    beta: float
    h_max: float

    def terms(self, model: torch.nn.Module, step: int) -> dict[str, torch.Tensor]:
        h = response_ce(model, self.harmful[step % len(self.harmful)])
        j = capped(h, self.h_max)
        out = {"h": h.detach()}
        if self.refusal and self.alpha:
            r = response_ce(model, self.refusal[step % len(self.refusal)])
            j = j - self.alpha * r
            out["r"] = r.detach()
        if self.benign is not None and self.beta:
            u = self._utility(model, step)
            j = j - self.beta * u
            out["u"] = u.detach()
        out["J"] = j
        return out

    def _utility(self, model: torch.nn.Module, step: int) -> torch.Tensor:
        if isinstance(self.benign, BenignReference):
            return self.benign.kl(model, step % len(self.benign.batches))
        assert self.benign is not None
        return response_ce(model, self.benign[step % len(self.benign)])
