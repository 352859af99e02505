"""The inspect report as text: the per-layer and per-module tables, the top tensors, and JSON."""

from __future__ import annotations

import json
import math

from .inspect_report import InspectReport
from .provenance import PROVENANCE_FILE


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
