"""The post-hoc objective J(ε) = min(h, h_max) − α·r − β·u (DESIGN.md section 1).

- h: response cross-entropy on harmful pairs (raised by ε), capped at ``h_max`` with no gradient
  above the cap;
- r: response cross-entropy on refusal pairs (kept low, so refusals come back);
- u: utility drift on benign prompts, KL(p_w ‖ p_{w+ε}) per token against reference
  log-probabilities computed once at ε = 0, or cross-entropy on benign responses when the user
  gives task data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX, Batch, batch_tokens
from .shared_prefix import span_logits


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}


def selected_logits(model: torch.nn.Module, batch: Batch, positions: torch.Tensor) -> torch.Tensor:
    """fp32 logits at the next-token ``positions`` (bool, ``[batch, seq - 1]``), as ``[N, vocab]``.

    The vocabulary projection runs only over the span of columns that holds a wanted position:
    with a 49k-token vocabulary it is a large share of a small model's compute and most of the
    activation memory, and the losses need it on a few response tokens only. The rows' shared
    first tokens (a chat template's system prompt) run once (``shared_prefix``).
    """
    cols = positions.any(0).nonzero().flatten()
    if cols.numel() == 0:
        return torch.zeros(0, 1, device=positions.device)
    start, end = int(cols[0]), int(cols[-1]) + 1
    logits = span_logits(model, batch, start, end)
    return logits[positions[:, start:end]].float()


def response_ce(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean next-token cross-entropy over response tokens (labels ≠ -100)."""
    labels = batch["labels"][:, 1:]
    positions = labels != IGNORE_INDEX
    return F.cross_entropy(selected_logits(model, batch, positions), labels[positions])


def capped(h: torch.Tensor, h_max: float) -> torch.Tensor:
    """min(h, h_max): the gradient is zero once h is above the cap, as in the paper."""
    return torch.clamp(h, max=h_max)


def _positions(batch: Batch) -> torch.Tensor:
    """Next-token positions whose target is a real token (both ends attended)."""
    mask = batch["attention_mask"].bool()
    return mask[:, :-1] & mask[:, 1:]


def _log_probs(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    return F.log_softmax(selected_logits(model, batch, _positions(batch)), dim=-1)


#: Reference tokens kept per position: the top of the distribution carries nearly all its mass.
REFERENCE_TOP_K = 256


def answer_head(batch: Batch, head_tokens: int | None) -> torch.Tensor:
    """Which of ``_positions(batch)`` predict one of the first ``head_tokens`` response tokens
    (every response token, its end-of-turn included, when ``head_tokens`` is None)."""
    labels = batch.get("labels")
    if labels is None or (head_tokens is not None and head_tokens <= 0):
        return torch.zeros(
            int(_positions(batch).sum()), dtype=torch.bool, device=batch["input_ids"].device
        )
    response = labels[:, 1:] != IGNORE_INDEX
    head = response if head_tokens is None else response & (response.cumsum(dim=1) <= head_tokens)
    return head[_positions(batch)]


@dataclass
class BenignReference:
    """Reference next-token log-probabilities at ε = 0 for each benign batch.

    Stored once, at real-token positions only, so the KL term needs no second model and no extra
    forward pass per step. Only the ``REFERENCE_TOP_K`` most likely tokens of each position are
    kept (log-probabilities and ids): a full-vocabulary copy of a 49k-token model is ~100 MB per
    batch, and the tail it would add weighs almost nothing in the KL.

    ``head_tokens``/``head_weight``: the drift term adds ``head_weight`` times the mean KL at the
    first ``head_tokens`` response positions (all of them when None, the patch's choice). A
    model decides there whether it answers, refuses or stops, and those positions are a small
    part of a mean over the system prompt, the prompt and the answer, which lets a refusal
    spread to benign prompts while the whole-sequence KL barely moves.
    """

    batches: list[Batch]
    head_tokens: int | None = 0
    head_weight: float = 0.0
    log_probs: list[torch.Tensor] = field(default_factory=list)
    token_ids: list[torch.Tensor] = field(default_factory=list)
    heads: list[torch.Tensor] = field(default_factory=list)

    @torch.no_grad()
    def compute(self, model: torch.nn.Module) -> BenignReference:
        self.log_probs, self.token_ids = [], []
        for b in self.batches:
            lp = _log_probs(model, b)
            top = lp.topk(min(REFERENCE_TOP_K, lp.shape[-1]), dim=-1)
            self.log_probs.append(top.values)
            self.token_ids.append(top.indices.to(torch.int32))
        self.heads = [answer_head(b, self.head_tokens) for b in self.batches]
        return self

    def position_kl(self, model: torch.nn.Module, i: int) -> torch.Tensor:
        """Per-position KL(p_ref ‖ p_model) on benign batch ``i``, over the reference's top-k.

        The weights are the reference probabilities renormalized over its top-k tokens, and the
        log-ratio uses the true log-probabilities, so the estimate is exactly 0 at ε = 0.
        """
        ref = self.log_probs[i]
        cur = _log_probs(model, self.batches[i]).gather(-1, self.token_ids[i].long())
        return (torch.softmax(ref, dim=-1) * (ref - cur)).sum(-1)

    def kl(self, model: torch.nn.Module, i: int) -> torch.Tensor:
        """Mean per-token KL on benign batch ``i`` (what ``--max-kl`` and the guard bound)."""
        return self.position_kl(model, i).mean()

    def drift(self, model: torch.nn.Module, i: int) -> torch.Tensor:
        """The objective's u on batch ``i``: the mean KL plus the weighted answer-head KL."""
        per = self.position_kl(model, i)
        u = per.mean()
        head = self.heads[i] if self.heads else None
        if self.head_weight and head is not None and bool(head.any()):
            u = u + self.head_weight * per[head].mean()
        return u


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

    def passes_per_step(self) -> int:
        """Forward+backward passes one ``terms`` call makes (one per active role)."""
        return 1 + bool(self.refusal and self.alpha) + bool(self.benign is not None and self.beta)

    def cost(self, steps: int, *, share: bool = False) -> tuple[int, int]:
        """(passes, tokens) that ``steps`` calls of ``terms`` compute (``share``: the model
        runs each batch's shared prefix once)."""
        roles: list[Sequence[Batch]] = [self.harmful]
        if self.refusal and self.alpha:
            roles.append(self.refusal)
        if self.benign is not None and self.beta:
            benign = self.benign
            roles.append(benign.batches if isinstance(benign, BenignReference) else benign)
        tokens = sum(
            batch_tokens(batches[k % len(batches)], share=share)
            for batches in roles
            for k in range(steps)
        )
        return steps * len(roles), tokens

    def terms(
        self,
        model: torch.nn.Module,
        step: int,
        *,
        backward: Callable[[torch.Tensor, bool], None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """J and its parts on step ``step``'s batches.

        ``backward(part, last)``, when given, is called on each term's signed, weighted share
        of J right after that term's forward pass, so only one term's graph is alive at a time
        (three graphs at once were the patch's memory peak on a real model); J is then
        returned detached. ``last`` marks the final share of the step.
        """
        parts: list[tuple[str, Callable[[], torch.Tensor], float]] = [
            ("h", lambda: response_ce(model, self.harmful[step % len(self.harmful)]), 1.0)
        ]
        if self.refusal and self.alpha:
            batch = self.refusal[step % len(self.refusal)]
            parts.append(("r", lambda: response_ce(model, batch), -self.alpha))
        if self.benign is not None and self.beta:
            parts.append(("u", lambda: self._utility(model, step), -self.beta))
        out: dict[str, torch.Tensor] = {}
        j: torch.Tensor | float = 0.0
        for i, (name, loss, weight) in enumerate(parts):
            value = loss()
            share = capped(value, self.h_max) if name == "h" else weight * value
            out[name] = value.detach()
            if backward is not None:
                backward(share, i == len(parts) - 1)
                share = share.detach()
            j = j + share
        out["J"] = j  # type: ignore[assignment]
        return out

    def _utility(self, model: torch.nn.Module, step: int) -> torch.Tensor:
        if isinstance(self.benign, BenignReference):
            return self.benign.drift(model, step % len(self.benign.batches))
        assert self.benign is not None
        return response_ce(model, self.benign[step % len(self.benign)])
