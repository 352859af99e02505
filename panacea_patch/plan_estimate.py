"""Estimators of the --dry-run plan: activation bytes, passes and tokens, compute device and dtype.

Activations are the largest graph one backward pass keeps: one batch, since the closed form runs
backward per harmful batch and a Panacea step per term (h, r, u), each right after its forward. Per token and decoder layer a
Llama-style block saves about 11·hidden + 4·intermediate values in the compute dtype (norm inputs
and outputs, q/k/v and their rotary copies, attention output, the MLP's gate, up, activation and
product), plus fp32 copies of the norms' inputs in 16-bit compute. The head projects only the
span of positions a loss needs (``objectives.selected_logits``): each batch keeps one fp32
vocabulary row per scored position (the log-softmax), and the largest batch adds a transient of
its span's logits plus two fp32 rows per scored position (the backward). Spans and scored
positions are counted from the real batches. The coefficients were checked against measured
peaks (docs/PERFORMANCE.md, "Dry-run plan").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .config import PatchConfig
from .data import count_tokens

# Values saved per token and layer: C_HIDDEN·hidden + C_INTER·intermediate (compute dtype).
C_HIDDEN = 12
C_INTER = 3
# Process overhead the estimate adds on each device where the model computes (allocator slack,
# batches, reference log-probs): a small fraction of the activations.
SLACK = 0.10

_SIZE = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2, torch.float64: 8}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def compute_device(device: str) -> str:
    """The device a run would compute on (``auto``: cuda when available)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def compute_dtype(cfg: PatchConfig, device: str) -> torch.dtype:
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return _DTYPES[cfg.dtype]


def text_config(config: Mapping) -> Mapping:
    for sub in ("text_config", "language_config", "llm_config"):
        if isinstance(config.get(sub), Mapping) and "hidden_size" in config[sub]:
            return config[sub]
    return config


def _dims(config: Mapping) -> dict[str, int] | None:
    c = text_config(config)

    def first(*keys: str) -> int | None:
        for k in keys:
            if isinstance(c.get(k), int):
                return int(c[k])
        return None

    hidden = first("hidden_size", "n_embd", "d_model")
    layers = first("num_hidden_layers", "n_layer", "num_layers")
    vocab = first("vocab_size")
    if not (hidden and layers and vocab):
        return None
    inter = first("intermediate_size", "ffn_dim", "n_inner") or 4 * hidden
    return {"hidden": hidden, "layers": layers, "vocab": vocab, "intermediate": inter}


# One batch forwarded into a backward: (tokens, rows of the projected span, scored positions).
Graph = Sequence[tuple[int, int, int]]


def activation_bytes(dims: Mapping[str, int], dtype: torch.dtype, graph: Graph) -> int:
    """Bytes one backward keeps for ``graph`` (see the module docstring)."""
    size = _SIZE[dtype]
    per_layer = (C_HIDDEN * dims["hidden"] + C_INTER * dims["intermediate"]) * size
    if size < 4:
        per_layer += 2 * dims["hidden"] * 4  # RMS/LayerNorm statistics in fp32
    vocab = dims["vocab"]
    kept = sum(
        tokens * dims["layers"] * per_layer + scored * vocab * 4 for tokens, _, scored in graph
    )
    transient = max(
        (rows * vocab * size + 2 * scored * vocab * 4 for _, rows, scored in graph), default=0
    )
    return int((kept + transient) * (1 + SLACK))


def _head(batch: Mapping[str, torch.Tensor], kl: bool, share: bool) -> tuple[int, int, int]:
    """(tokens, span rows, scored positions) of one batch, as ``objectives`` selects them."""
    if kl:
        mask = batch["attention_mask"].bool()
        positions = mask[:, :-1] & mask[:, 1:]
    else:
        positions = batch["labels"][:, 1:] != -100
    cols = positions.any(0).nonzero().flatten()
    span = int(cols[-1]) - int(cols[0]) + 1 if cols.numel() else 0
    return count_tokens([batch], share=share), span * positions.shape[0], int(positions.sum())


def count_passes(cfg: PatchConfig, data: Any, steps: int) -> dict[str, Any]:
    """Forward(+backward) passes and tokens the run makes over ``steps`` ascent steps, from the
    real batches."""
    harmful, refusal, benign = data.harmful, data.refusal, data.benign
    # Decoder-only models run each batch's shared prefix once (shared_prefix), except under
    # gradient checkpointing, where transformers turns the cache off.
    share = not cfg.gradient_checkpointing
    out: dict[str, Any] = {
        "closed_form": {"passes": len(harmful), "tokens": count_tokens(harmful, share=share)},
        "graphs": [[_head(b, False, share)] for b in harmful],
    }
    if cfg.method == "panacea" and steps > 0:
        use_r = bool(refusal) and bool(cfg.alpha)
        use_u = bool(benign) and bool(cfg.beta)
        passes = tokens = 0
        graphs = []
        for k in range(steps):
            graph = [_head(harmful[k % len(harmful)], False, share)]
            if use_r:
                graph.append(_head(refusal[k % len(refusal)], False, share))
            if use_u:
                graph.append(_head(benign[k % len(benign)], not cfg.benign_is_task, share))
            passes += len(graph)
            tokens += sum(t for t, _, _ in graph)
            # Each term runs backward right after its own forward: one graph at a time.
            graphs.extend([g] for g in graph)
        out["ascent"] = {"steps": steps, "passes": passes, "tokens": tokens}
        out["graphs"] += graphs
    reference = benign[: max(steps, 1)] if benign and not cfg.benign_is_task else []
    heldout = list(getattr(data, "heldout_benign", [])) + list(getattr(data, "heldout_refusal", []))
    # Positions whose top-k reference log-probabilities are kept for the run.
    out["reference_positions"] = sum(
        _head(b, True, share)[2] for b in reference + list(getattr(data, "heldout_benign", []))
    )
    out["forward_only"] = {
        "passes": len(reference) + 2 * len(heldout),
        "tokens": count_tokens(reference, share=share) + 2 * count_tokens(heldout, share=share),
    }
    return out


def _estimated_graphs(cfg: PatchConfig) -> list[list[tuple[int, int, int]]]:
    """Without the data: full batches of --max-length tokens, every position scored."""
    tokens = cfg.batch_size * cfg.max_length
    return [[(tokens, tokens, tokens)]]
