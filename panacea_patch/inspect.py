"""The layer-wise safety report: where a patch put its perturbation, read from two checkpoints.

The paper's "layer-wise safety coefficients" are the per-layer magnitudes of the optimized ε.
``inspect_patch`` recovers them from the patched checkpoint and its reference alone, streaming one
tensor pair at a time, so it works for patches made by any method, any tool, or by hand.
``panacea_patch.json``, when present, only adds the harmful-gradient share (which cannot be
recomputed from weights) and a cross-check of the recorded realized norm.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import ShardReader
from .errors import InputError
from .measure import TensorStats, finish_shares, tensor_stats
from .provenance import PROVENANCE_FILE, read_provenance
from .safetensors_io import TensorInfo, bytes_to_tensor
from .source import ResolvedSource, resolve_source
from .targets import Target, block_index, decoder_block_prefix, module_type

# Attention first, in the order the projections run, then the MLP; unknown labels follow sorted.
_MODULE_ORDER = ("q", "k", "v", "qkv", "o", "attn", "mlp")
NON_BLOCK_LABEL = "other"
_NOT_A_PATCH_HINT = (
    "pass as --reference the exact checkpoint PATCHED was made from "
    "(for a LoRA adapter patch, the source adapter; not the base model)"
)


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


def inspect_patch(
    patched: str | Path, reference: str | Path, *, token: str | None = None
) -> InspectReport:
    """Measure the perturbation ``patched − reference`` tensor by tensor.

    Both checkpoints must have identical tensor names and shapes (a patch never changes them).
    Only one tensor pair is in memory at a time. Raises :class:`InputError` when ``patched`` is
    not a patch of ``reference``.
    """
    psrc = resolve_source(patched, token=token)
    rsrc = resolve_source(reference, token=token)
    _check_pairing(psrc, rsrc)
    notes: list[str] = []
    provenance = _load_provenance(psrc.path, notes)
    with ShardReader(psrc) as pr, ShardReader(rsrc) as rr:
        pinfos, rinfos = pr.infos(), rr.infos()
        _check_same_layout(pinfos, rinfos)
        main_prefix = decoder_block_prefix(sorted(rinfos), rsrc.config)
        stats = list(_changed_tensors(pr, rr, notes))
    _attach_grad_shares(stats, provenance)
    finish_shares(stats)
    _fix_zero_reference(stats)
    total = _aggregate("total", stats)
    report = InspectReport(
        patched=str(psrc.path),
        reference=str(rsrc.path),
        kind=psrc.kind,
        tensors=stats,
        layers=_by_layer(stats, main_prefix),
        modules=_by_module(stats),
        total=total,
        num_tensors=len(pinfos),
        provenance=_provenance_summary(provenance),
        notes=notes,
    )
    _cross_check(report, provenance)
    return report


# --- reading -------------------------------------------------------------------------------------


def _check_pairing(psrc: ResolvedSource, rsrc: ResolvedSource) -> None:
    if psrc.path == rsrc.path:
        raise InputError(
            f"PATCHED and --reference are the same checkpoint ({psrc.path})",
            hint="pass as --reference the checkpoint the patch was made from",
        )
    if psrc.kind != rsrc.kind:
        what = {"adapter": "a LoRA adapter", "full": "a full model"}
        raise InputError(
            f"{psrc.path} is not a patch of this reference: PATCHED is {what[psrc.kind]} "
            f"but --reference is {what[rsrc.kind]}",
            hint=_NOT_A_PATCH_HINT,
        )


def _check_same_layout(pinfos: dict[str, TensorInfo], rinfos: dict[str, TensorInfo]) -> None:
    """A patch keeps every tensor name and shape; anything else is a different model."""
    missing = sorted(set(rinfos) - set(pinfos))
    extra = sorted(set(pinfos) - set(rinfos))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) of the reference are missing ({_few(missing)})")
        if extra:
            parts.append(f"{len(extra)} tensor(s) are not in the reference ({_few(extra)})")
        raise InputError(
            "PATCHED is not a patch of this reference: " + "; ".join(parts), hint=_NOT_A_PATCH_HINT
        )
    reshaped = [n for n in sorted(pinfos) if pinfos[n].shape != rinfos[n].shape]
    if reshaped:
        n = reshaped[0]
        raise InputError(
            f"PATCHED is not a patch of this reference: {len(reshaped)} tensor(s) differ in shape "
            f"(e.g. {n}: {list(pinfos[n].shape)} vs {list(rinfos[n].shape)} in the reference)",
            hint=_NOT_A_PATCH_HINT,
        )


def _few(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


def _changed_tensors(pr: ShardReader, rr: ShardReader, notes: list[str]) -> Iterator[TensorStats]:
    """Stats for every tensor whose stored values differ, in the patched file order.

    Walking the patched shards in order keeps its reads sequential. Each pair is compared in its
    own call so both tensors are freed before the next pair is read.
    """
    recast: list[str] = []
    for _file, names in pr.shards():
        for name in names:
            pinfo, rinfo = pr.info(name), rr.info(name)
            if pinfo.dtype != rinfo.dtype:
                recast.append(name)
            stats = _compare_pair(pr, rr, pinfo, rinfo)
            if stats is not None:
                yield stats
    if recast:
        notes.append(
            f"{len(recast)} tensor(s) have a different dtype than in the reference "
            f"(e.g. {recast[0]}); their ε includes the rounding of that conversion"
        )


def _compare_pair(
    pr: ShardReader, rr: ShardReader, pinfo: TensorInfo, rinfo: TensorInfo
) -> TensorStats | None:
    """The pair's stats, or None when the patched values equal the reference's."""
    new_raw, old_raw = pr.read_bytes(pinfo), rr.read_bytes(rinfo)
    # Most tensors are untouched and byte-identical: that needs no conversion to float.
    if pinfo.dtype == rinfo.dtype and new_raw == old_raw:
        return None
    w0, w1 = bytes_to_tensor(old_raw, rinfo), bytes_to_tensor(new_raw, pinfo)
    if pinfo.dtype != rinfo.dtype and torch.equal(w0.to(torch.float32), w1.to(torch.float32)):
        return None
    return tensor_stats(_as_target(pinfo.name, pinfo), w0, w1)


def _as_target(name: str, info: TensorInfo) -> Target:
    b = block_index(name)
    return Target(
        name, info.shape, info.numel, b[1] if b else None, module_type(b[2] if b else name)
    )


def _fix_zero_reference(stats: list[TensorStats]) -> None:
    # tensor_stats reports rel = 0 when ‖w‖ = 0, which would hide a perturbation of a zero tensor
    # (e.g. a freshly initialized LoRA B); it is unbounded instead.
    for s in stats:
        if s.norm_w == 0.0 and s.norm_eps > 0.0:
            s.rel = math.inf


def _load_provenance(path: Path, notes: list[str]) -> dict[str, Any] | None:
    try:
        return read_provenance(path)
    except (OSError, ValueError) as exc:
        notes.append(f"{PROVENANCE_FILE} could not be read ({exc}); no harmful-gradient share")
        return None


def _attach_grad_shares(stats: list[TensorStats], provenance: dict[str, Any] | None) -> None:
    layers = (provenance or {}).get("layers") or []
    shares = {
        entry["name"]: float(entry["grad_share"])
        for entry in layers
        if isinstance(entry, dict) and entry.get("grad_share") is not None and "name" in entry
    }
    for s in stats:
        s.grad_share = shares.get(s.name)


def _provenance_summary(provenance: dict[str, Any] | None) -> dict[str, Any] | None:
    if provenance is None:
        return None
    source = provenance.get("source") or {}
    return {
        "method": provenance.get("method"),
        "rho": provenance.get("rho"),
        "realized_norm": provenance.get("realized_norm"),
        "source": source.get("repo_id") or source.get("spec"),
        "created": provenance.get("created"),
    }


def _cross_check(report: InspectReport, provenance: dict[str, Any] | None) -> None:
    recorded = (provenance or {}).get("realized_norm")
    if not isinstance(recorded, (int, float)):
        return
    if not math.isclose(recorded, report.realized_norm, rel_tol=0.01, abs_tol=1e-12):
        report.notes.append(
            f"{PROVENANCE_FILE} records a realized |eps| of {recorded:.6g} but the checkpoints "
            f"differ by {report.realized_norm:.6g}: --reference may not be the source of this "
            "patch, or the files were changed after patching"
        )


# --- aggregation ---------------------------------------------------------------------------------


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


# --- text ----------------------------------------------------------------------------------------


def _num(x: float | None, spec: str = ".4g") -> str:
    if x is None:
        return "-"
    return format(x, spec) if math.isfinite(x) else str(x)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _render(rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell: first column left-aligned, numbers right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _layer_table(report: InspectReport) -> list[str]:
    modules = report.module_names()
    grad = report.has_grad_share
    head = ["layer", "|eps|", "|eps|/|w|", "share", *(["grad share"] if grad else [])]
    rows = [head + [f"|eps| {m}" for m in modules]]
    for layer in report.layers:
        cells = [layer.name, _num(layer.norm_eps), _num(layer.rel, ".3e"), _pct(layer.share)]
        if grad:
            cells.append(_pct(layer.grad_share))
        cells += [_num(layer.modules[m].norm_eps) if m in layer.modules else "-" for m in modules]
        rows.append(cells)
    t = report.total
    total = ["total", _num(t.norm_eps), _num(t.rel, ".3e"), _pct(t.share)]
    by_module = [_num(m.norm_eps) for m in report.modules]
    rows.append(total + ([_pct(t.grad_share)] if grad else []) + by_module)
    return _render(rows)


def _module_table(report: InspectReport) -> list[str]:
    grad = report.has_grad_share
    rows = [["module", "tensors", "|eps|", "|eps|/|w|", "share", *(["grad share"] if grad else [])]]
    for m in report.modules:
        cells = [m.name, str(m.num_tensors), _num(m.norm_eps), _num(m.rel, ".3e"), _pct(m.share)]
        rows.append(cells + ([_pct(m.grad_share)] if grad else []))
    return _render(rows)


def _top_tensors(report: InspectReport, top: int) -> list[str]:
    ranked = sorted(report.tensors, key=lambda s: s.share, reverse=True)[:top]
    rows = [["share", "|eps|", "|eps|/|w|", "tensor"]]
    rows += [[_pct(s.share), _num(s.norm_eps), _num(s.rel, ".3e"), s.name] for s in ranked]
    # The tensor name is the long column: put it last and left-aligned.
    lines = _render([[*r[:3], ""] for r in rows])
    return [f"{line}  {r[3]}" for line, r in zip(lines, rows, strict=True)]


def format_report(report: InspectReport, *, top: int = 10) -> str:
    """The human-readable report: per-layer table, per-module totals, top tensors, totals."""
    out = [f"patched:   {report.patched}", f"reference: {report.reference} ({report.kind})"]
    if report.provenance:
        fields = {k: report.provenance.get(k) for k in ("method", "rho", "source")}
        shown = " ".join(
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in fields.items()
            if v is not None
        )
        out.append(f"{PROVENANCE_FILE}: {shown or 'present'}")
    out.append("")
    if report.tensors:
        out += ["Per layer (|eps| = norm of w' - w; share = part of the total |eps|^2):"]
        out += [*_layer_table(report), "", "Per module type:", *_module_table(report)]
        if top > 0:
            out += ["", f"Top {min(top, report.num_changed)} tensors by share:"]
            out += _top_tensors(report, top)
    else:
        out.append("No tensor differs from the reference: the checkpoints hold identical weights.")
    changed_params = report.total.numel
    out += [
        "",
        f"realized |w'-w| = {_num(report.realized_norm, '.6g')} "
        f"(|eps|/|w| = {_num(report.total.rel, '.3e')} over the changed tensors)",
        f"changed tensors: {report.num_changed} ({changed_params:,} params); "
        f"untouched: {report.num_untouched}; total: {report.num_tensors}",
    ]
    out += [f"note: {n}" for n in report.notes]
    return "\n".join(out)


def report_json(report: InspectReport) -> str:
    """The report as one JSON document (what ``inspect --json`` prints)."""
    return json.dumps(report.to_dict(), indent=2)


# --- plot ----------------------------------------------------------------------------------------


def _matplotlib() -> tuple[Any, Any]:
    """matplotlib's Figure and Agg canvas, imported only for a plot (it is an optional extra)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError(
            "--plot needs matplotlib, which is not installed",
            hint="pip install 'panacea-patch[plots]'",
        ) from None
    return Figure, FigureCanvasAgg


def plot_report(report: InspectReport, path: str | Path) -> Path:
    """Draw the per-layer bar chart (grouped by module type) as a PNG at ``path``.

    Panels: ‖ε‖ and ‖ε‖/‖w‖ per layer and module; a third compares each layer's share of ‖ε‖²
    with its harmful-gradient share when the patch recorded one. Uses the Agg canvas directly
    rather than pyplot, so the caller's matplotlib backend and global state are left alone.
    """
    path = Path(path)
    if not report.tensors:
        raise InputError(
            "nothing to plot: no tensor differs from the reference",
            hint="check that PATCHED is the patched output and --reference its source",
        )
    if not path.parent.exists():
        raise InputError(
            f"cannot write the plot: directory {path.parent} does not exist",
            hint="create the directory first or pass another --plot path",
        )
    figure_cls, canvas_cls = _matplotlib()
    fig = _draw(figure_cls, report)
    canvas_cls(fig)
    fig.savefig(path, format="png", dpi=110)
    return path


def _draw(figure_cls: Any, report: InspectReport) -> Any:
    labels = [layer.name for layer in report.layers]
    modules = report.module_names()
    panels = 3 if report.has_grad_share else 2
    # Wide enough for about 0.2 inch per bar, capped so a 80-layer model still fits a screen.
    width = min(24.0, max(8.0, 0.2 * len(labels) * (len(modules) + 1) + 3))
    fig = figure_cls(figsize=(width, 3.2 * panels + 0.8), layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    _grouped_bars(axes[0], report, modules, "norm_eps")
    axes[0].set_ylabel("‖ε‖ = ‖w' − w‖")
    axes[0].legend(title="module", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    _grouped_bars(axes[1], report, modules, "rel")
    axes[1].set_ylabel("‖ε‖ / ‖w‖")
    if report.has_grad_share:
        _share_bars(axes[2], report)
    axes[-1].set_xlim(-0.6, len(labels) - 0.4)  # default margins waste a bar group per side
    axes[-1].set_xlabel("layer index")
    axes[-1].set_xticks(range(len(labels)), labels, rotation=90 if len(labels) > 48 else 0)
    fig.suptitle(
        f"Panacea perturbation by layer: {Path(report.patched).name}"
        f"{' (LoRA adapter)' if report.kind == 'adapter' else ''}\n"
        f"realized ‖ε‖ = {report.realized_norm:.4g} over {report.num_changed} changed tensors "
        f"(‖ε‖/‖w‖ = {_num(report.total.rel, '.3g')})"
    )
    return fig


def _grouped_bars(ax: Any, report: InspectReport, modules: list[str], attr: str) -> None:
    n = len(modules)
    bar = 0.8 / n
    for i, m in enumerate(modules):
        xs = [j + (i - (n - 1) / 2) * bar for j in range(len(report.layers))]
        ys = [
            _finite(getattr(layer.modules[m], attr)) if m in layer.modules else 0.0
            for layer in report.layers
        ]
        ax.bar(xs, ys, bar, label=m, color=f"C{i % 10}")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _share_bars(ax: Any, report: InspectReport) -> None:
    xs = range(len(report.layers))
    eps = [100 * layer.share for layer in report.layers]
    grad = [100 * (layer.grad_share or 0.0) for layer in report.layers]
    ax.bar([x - 0.2 for x in xs], eps, 0.4, label="share of ‖ε‖²", color="C0")
    ax.bar([x + 0.2 for x in xs], grad, 0.4, label="harmful-gradient share", color="C3")
    ax.set_ylabel("% of total")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _finite(x: float) -> float:
    # An unbounded ratio (zero reference weights) would flatten every other bar.
    return x if math.isfinite(x) else 0.0
