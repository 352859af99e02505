"""Which tensors the perturbation touches.

Default: the 2-D weights inside the model's repeated decoder blocks (attention and MLP projections),
found from the tensor names and the layer count in the config rather than from one architecture's
module names. For a PEFT LoRA adapter: its A/B matrices. A regex overrides both.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .errors import InputError
from .safetensors_io import TensorInfo

# "<prefix>.<index>.<rest>": the first numbered component of a name is its block index.
_BLOCK = re.compile(r"^(?P<prefix>.*?)\.(?P<idx>\d+)\.(?P<rest>.+)$")
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_LORA = re.compile(r"\.lora_[AB]\.")


@dataclass(frozen=True)
class Target:
    """One targeted tensor and the layer it belongs to (None when not in a block)."""

    name: str
    shape: tuple[int, ...]
    numel: int
    layer: int | None
    module: str
    dtype: torch.dtype = torch.float32


def block_index(name: str) -> tuple[str, int, str] | None:
    m = _BLOCK.match(name)
    return (m["prefix"], int(m["idx"]), m["rest"]) if m else None


def _layer_counts(config: Mapping) -> set[int]:
    counts = {int(config[k]) for k in _LAYER_KEYS if isinstance(config.get(k), int)}
    for sub in ("text_config", "language_config", "llm_config"):
        if isinstance(config.get(sub), Mapping):
            counts |= _layer_counts(config[sub])
    return counts


def decoder_block_prefix(names: list[str], config: Mapping) -> str | None:
    """The name prefix of the repeated decoder blocks, e.g. ``model.layers``.

    Among prefixes followed by a layer index, prefer one whose number of distinct indices equals
    the config's layer count; otherwise the prefix with the most indices.
    """
    indices: dict[str, set[int]] = defaultdict(set)
    for n in names:
        if (b := block_index(n)) is not None:
            indices[b[0]].add(b[1])
    if not indices:
        return None
    counts = _layer_counts(config)
    matching = [p for p, idx in indices.items() if len(idx) in counts]
    pool = matching or list(indices)
    return max(pool, key=lambda p: (len(indices[p]), -len(p)))


_MODULE_LABELS = (
    ("query_key_value", "qkv"),
    ("qkv", "qkv"),
    ("q_proj", "q"),
    ("k_proj", "k"),
    ("v_proj", "v"),
    ("o_proj", "o"),
    ("out_proj", "o"),
)


def module_type(rest: str) -> str:
    """A short module label for reports: q, k, v, o, qkv, attn, mlp, or the leaf name."""
    parts = [p for p in rest.split(".") if p not in ("weight", "default", "lora_A", "lora_B")]
    leaf = parts[-1] if parts else rest
    for key, label in _MODULE_LABELS:
        if key in leaf:
            return label
    if "attn" in rest or "attention" in rest:
        return "o" if leaf == "dense" else "attn"
    if any(m in rest for m in ("mlp", "ffn", "feed_forward", "fc", "experts")):
        return "mlp"
    return leaf


def select_targets(
    infos: Mapping[str, TensorInfo],
    *,
    config: Mapping,
    adapter: bool = False,
    pattern: str | None = None,
) -> list[Target]:
    """The target set, in a stable (sorted by name) order."""
    names = sorted(infos)
    if pattern is not None:
        try:
            rx = re.compile(pattern)
        except re.error as exc:
            raise InputError(f"--targets {pattern!r} is not a valid regex ({exc})") from None
        chosen = [n for n in names if rx.search(n) and infos[n].dtype.is_floating_point]
        what = f"--targets {pattern!r}"
    elif adapter:
        chosen = [n for n in names if _LORA.search(n)]
        what = "the adapter's LoRA A/B tensors"
    else:
        prefix = decoder_block_prefix(names, config)
        chosen = [
            n
            for n in names
            if prefix is not None
            and n.startswith(prefix + ".")
            and len(infos[n].shape) == 2
            and infos[n].dtype.is_floating_point
        ]
        what = "2-D weights of the repeated decoder blocks"
    if not chosen:
        raise InputError(
            f"no tensor matches {what}",
            hint="list the tensors with `panacea-patch patch SOURCE --dry-run --targets .` "
            "and pass a --targets regex that matches some of them",
        )
    return [_target(n, infos[n]) for n in chosen]


def _target(name: str, info: TensorInfo) -> Target:
    b = block_index(name)
    layer = b[1] if b else None
    return Target(name, info.shape, info.numel, layer, module_type(b[2] if b else name), info.dtype)
