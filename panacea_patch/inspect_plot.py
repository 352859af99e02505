"""The inspect report as a chart: per-layer perturbation norms by module, and the shares (matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .errors import InputError
from .inspect_report import InspectReport
from .inspect_text import _num


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
