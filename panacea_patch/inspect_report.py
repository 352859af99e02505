"""The inspect report's data: per-tensor, per-layer and per-module perturbation norms, and grouping."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from .measure import TensorStats
from .targets import block_index

# Attention first, in the order the projections run, then the MLP; unknown labels follow sorted.
_MODULE_ORDER = ("q", "k", "v", "qkv", "o", "attn", "mlp")
NON_BLOCK_LABEL = "other"


@dataclass
class GroupStats:
    """‖ε‖ over a group of changed tensors: one layer, one module type, or all of them.

    ``rel`` is ‖ε‖/‖w‖ with both norms over the group (inf when the reference weights are zero);
    ``share`` is the group's part of the total ‖ε‖²; ``grad_share`` is the summed harmful-gradient
    share recorded in ``panacea_patch.json`` (None when no tensor in the group has one).
    """

    name: str
    num_tensors: int = 0
    numel: int = 0
    norm_eps: float = 0.0
    norm_w: float = 0.0
    rel: float = 0.0
    share: float = 0.0
    grad_share: float | None = None


@dataclass
class LayerStats(GroupStats):
    """One decoder block (or the tensors outside any block), with its per-module breakdown."""

    prefix: str | None = None
    layer: int | None = None
    modules: dict[str, GroupStats] = field(default_factory=dict)


@dataclass
class InspectReport:
    """The realized perturbation ``patched − reference``, per tensor, per layer and per module."""

    patched: str
    reference: str
    kind: str
    tensors: list[TensorStats]
    layers: list[LayerStats]
    modules: list[GroupStats]
    total: GroupStats
    num_tensors: int
    provenance: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def realized_norm(self) -> float:
        """‖w' − w‖₂ over every tensor, as stored (after rounding to the checkpoint's dtype)."""
        return self.total.norm_eps

    @property
    def num_changed(self) -> int:
        return len(self.tensors)

    @property
    def num_untouched(self) -> int:
        return self.num_tensors - self.num_changed

    @property
    def has_grad_share(self) -> bool:
        return any(t.grad_share is not None for t in self.tensors)

    def module_names(self) -> list[str]:
        return [m.name for m in self.modules]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data; non-finite numbers (a zero reference norm, NaN weights) → None."""
        total = asdict(self.total)
        total.pop("name")
        total.update(
            realized_norm=self.realized_norm,
            num_changed=self.num_changed,
            num_untouched=self.num_untouched,
            num_tensors=self.num_tensors,
        )
        out = {
            "patched": self.patched,
            "reference": self.reference,
            "kind": self.kind,
            "has_grad_share": self.has_grad_share,
            "total": total,
            "layers": [asdict(layer) for layer in self.layers],
            "modules": [asdict(m) for m in self.modules],
            "tensors": [t.to_dict() for t in self.tensors],
            "provenance": self.provenance,
            "notes": list(self.notes),
        }
        return _json_safe(out)


def _aggregate(name: str, stats: list[TensorStats]) -> GroupStats:
    eps2 = sum(s.norm_eps**2 for s in stats)
    w2 = sum(s.norm_w**2 for s in stats)
    grads = [s.grad_share for s in stats if s.grad_share is not None]
    return GroupStats(
        name=name,
        num_tensors=len(stats),
        numel=sum(s.numel for s in stats),
        norm_eps=math.sqrt(eps2),
        norm_w=math.sqrt(w2),
        rel=_ratio(math.sqrt(eps2), math.sqrt(w2)),
        share=sum(s.share for s in stats),
        grad_share=sum(grads) if grads else None,
    )


def _ratio(eps: float, w: float) -> float:
    if w:
        return eps / w
    return math.inf if eps else 0.0


def _module_sort_key(module: str) -> tuple[int, str]:
    order = _MODULE_ORDER.index(module) if module in _MODULE_ORDER else len(_MODULE_ORDER)
    return order, module


def _by_module(stats: list[TensorStats]) -> list[GroupStats]:
    groups: dict[str, list[TensorStats]] = defaultdict(list)
    for s in stats:
        groups[s.module].append(s)
    return [_aggregate(m, groups[m]) for m in sorted(groups, key=_module_sort_key)]


def _layer_key(name: str, main_prefix: str | None) -> tuple[int, str, int, str | None, int | None]:
    """Sort key and identity of a tensor's layer row: main stack first, then other stacks."""
    b = block_index(name)
    if b is None:
        return 2, "", 0, None, None
    prefix, idx, _rest = b
    return (0 if prefix == main_prefix else 1), prefix, idx, prefix, idx


def _by_layer(stats: list[TensorStats], main_prefix: str | None) -> list[LayerStats]:
    groups: dict[tuple, list[TensorStats]] = defaultdict(list)
    for s in stats:
        groups[_layer_key(s.name, main_prefix)].append(s)
    rows = []
    for key in sorted(groups, key=lambda k: k[:3]):
        rank, _sort_prefix, _sort_idx, prefix, idx = key
        members = groups[key]
        label = NON_BLOCK_LABEL if idx is None else (str(idx) if rank == 0 else f"{prefix}.{idx}")
        agg = _aggregate(label, members)
        modules = {m.name: m for m in _by_module(members)}
        rows.append(LayerStats(**asdict(agg), prefix=prefix, layer=idx, modules=modules))
    return rows


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj
