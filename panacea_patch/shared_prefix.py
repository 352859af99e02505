"""Forward passes that compute a batch's shared first tokens once.

Every example of a chat model starts with the same template tokens: SmolLM2's default system
prompt and the user header are 24 of the ~60 tokens of a typical training example. The rows of
a right-padded batch then agree on their first P columns, and a causal model's activations there
do not depend on the row. So the prefix runs once, as one row, its keys and values are repeated
for the batch, and the rows run from column P on top of that cache. The logits are the same as
one plain forward pass (up to float rounding), gradients flow through the cache into the
weights, and a batch of B rows of length L costs P + B·(L − P) tokens instead of B·L.
"""

from __future__ import annotations

import functools
import inspect

import torch

from .data.batching import Batch, prefix_length

#: Model classes found unable to run on a repeated prefix cache (see ``span_logits``).
_NO_SHARING: set[type] = set()


def _base(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@functools.cache
def _forward_params(cls: type) -> frozenset[str]:
    # Once per model class: this sits on the path of every forward pass.
    try:
        return frozenset(inspect.signature(cls.forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in _forward_params(type(_base(model)))


def supported(model: torch.nn.Module) -> bool:
    """Whether ``model`` can run a batch on top of a key/value cache of its shared prefix.

    Not under gradient checkpointing: transformers turns the cache off there.
    """
    base = _base(model)
    config = getattr(base, "config", None)
    return (
        type(base) not in _NO_SHARING
        and _cache_arg(model) is not None
        and "use_cache" in _forward_params(type(base))
        and config is not None
        and not getattr(config, "is_encoder_decoder", False)
        and not _checkpointing(base)
    )


def _checkpointing(base: torch.nn.Module) -> bool:
    # transformers 5.2x renamed the flag (the old name warns); read whichever exists.
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(base), name) or name in vars(base):
            return bool(getattr(base, name))
    return False


def _cache_arg(model: torch.nn.Module) -> str | None:
    # transformers 5.2x renamed ``past_key_values`` to ``cache``; accept either.
    params = _forward_params(type(_base(model)))
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def _call(
    model: torch.nn.Module, keep: torch.Tensor | None, **inputs
) -> tuple[torch.Tensor, object]:
    """(logits at columns ``keep`` of this call's input, all when None; the returned cache)."""
    if keep is not None and accepts_logits_to_keep(model):
        out = model(**inputs, logits_to_keep=keep)
    else:
        out = model(**inputs)
    logits = out.logits if keep is None or accepts_logits_to_keep(model) else out.logits[:, keep]
    return logits, out["cache"] if "cache" in out else out.get("past_key_values")


def span_logits(model: torch.nn.Module, batch: Batch, start: int, end: int) -> torch.Tensor:
    """Logits at columns ``start:end`` of every row, ``[rows, end - start, vocab]``."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    cols = torch.arange(start, end, device=ids.device)
    p = prefix_length(batch) if supported(model) else 0
    if p == 0:
        keep = None if (start, end) == (0, ids.shape[1]) else cols
        return _call(model, keep, input_ids=ids, attention_mask=mask)[0]
    # The prefix pass must return its cache even when no wanted column lies in it; one column
    # of logits is then the cheapest output to ask for.
    pre_cols, row_cols = cols[cols < p], cols[cols >= p] - p
    pre, cache = _call(
        model,
        pre_cols if pre_cols.numel() else torch.tensor([p - 1], device=ids.device),
        input_ids=ids[:1, :p],
        attention_mask=mask[:1, :p],
        use_cache=True,
    )
    if not row_cols.numel():
        return pre.expand(ids.shape[0], -1, -1)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        # A model that advertises a cache but returns none (or one that cannot be repeated
        # per row) runs plainly from now on.
        _NO_SHARING.add(type(_base(model)))
        return span_logits(model, batch, start, end)
    cache.batch_repeat_interleave(ids.shape[0])
    # Positions follow from the cache's length; the full-width mask covers prefix and padding.
    rows, _ = _call(
        model,
        row_cols,
        input_ids=ids[:, p:],
        attention_mask=mask,
        use_cache=True,
        **{_cache_arg(model): cache},
    )
    if not pre_cols.numel():
        return rows
    return torch.cat([pre.expand(ids.shape[0], -1, -1), rows], dim=1)
