"""Publishing a patched output: its model card, the per-layer chart, and the push to the Hub.

Everything here works from the output directory alone: ``panacea_patch.json`` (the provenance
record) holds all the card needs, so ``panacea-patch push DIR REPO`` can publish an output made
earlier, on another machine, or after metrics were added by hand.

The chart (:data:`CHART_FILE`) is drawn with ``panacea_patch.inspect``'s plot from the record's
per-tensor statistics, or with a simpler built-in bar chart when that module is not available.
It needs matplotlib (the ``plots`` extra); without it the card simply links no chart.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .card import default_model_name, readme_is_replaceable, write_model_card
from .errors import InputError
from .hub import PushResult, check_push_target, push_folder
from .progress import hub_progress_bars, is_terminal
from .provenance import PROVENANCE_FILE, read_provenance

logger = logging.getLogger(__name__)

CHART_FILE = "panacea_layers.png"

__all__ = ["CHART_FILE", "PushResult", "default_commit_message", "publish", "write_card"]


# ---------------------------------------------------------------------------- record


def _load_record(out_dir: Path) -> dict[str, Any]:
    try:
        record = read_provenance(out_dir)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"cannot read {out_dir / PROVENANCE_FILE} ({exc})",
            hint="restore the file from the patch run, or re-run `panacea-patch patch`",
        ) from None
    if not isinstance(record, dict):
        raise InputError(
            f"{out_dir} is not a panacea-patch output (it has no {PROVENANCE_FILE})",
            hint="pass the --out directory of `panacea-patch patch`; for other folders use"
            " `hf upload`",
        )
    return record


def _source_dir(record: Mapping[str, Any], given: Path | None) -> Path | None:
    """The source checkpoint directory: the one given, else the recorded one if still there."""
    if given is not None:
        return Path(given)
    recorded = (record.get("source") or {}).get("path")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    return None


# ---------------------------------------------------------------------------- chart


def _layer_entries(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    layers = record.get("layers") or []
    return [
        dict(entry)
        for entry in layers
        if isinstance(entry, Mapping)
        and isinstance(entry.get("name"), str)
        and isinstance(entry.get("norm_eps"), (int, float))
    ]


def _chart_is_fresh(out_dir: Path) -> bool:
    """A chart drawn after the record was last written shows the current record."""
    chart, record = out_dir / CHART_FILE, out_dir / PROVENANCE_FILE
    return chart.is_file() and chart.stat().st_mtime_ns >= record.stat().st_mtime_ns


def _inspect_report(record: Mapping[str, Any], layers: list[dict[str, Any]], out_dir: Path) -> Any:
    """``inspect``'s report rebuilt from the recorded per-tensor statistics (no weights read)."""
    from . import inspect as insp
    from .measure import TensorStats
    from .targets import decoder_block_prefix

    names = {f.name for f in dataclasses.fields(TensorStats)}
    stats = [TensorStats(**{k: v for k, v in entry.items() if k in names}) for entry in layers]
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    insp._fix_zero_reference(stats)
    total = insp._aggregate("total", stats)
    realized = record.get("realized_norm")
    if isinstance(realized, (int, float)):
        total.norm_eps = float(realized)
    return insp.InspectReport(
        patched=default_model_name(record),  # the plot's title; out_dir may be a temp name
        reference=str((record.get("source") or {}).get("spec") or ""),
        kind=str((record.get("source") or {}).get("kind") or "full"),
        tensors=stats,
        layers=insp._by_layer(stats, decoder_block_prefix([s.name for s in stats], config)),
        modules=insp._by_module(stats),
        total=total,
        num_tensors=len(stats),
    )


def _plot_simple(record: Mapping[str, Any], layers: list[dict[str, Any]], path: Path) -> None:
    """One bar per decoder layer: its ‖ε‖ (tensors outside the blocks grouped as "other")."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sums: dict[Any, float] = {}
    for entry in layers:
        key = entry.get("layer") if isinstance(entry.get("layer"), int) else "other"
        sums[key] = sums.get(key, 0.0) + float(entry["norm_eps"]) ** 2
    keys = sorted((k for k in sums if k != "other"), key=int) + (
        ["other"] if "other" in sums else []
    )
    fig = Figure(figsize=(min(24.0, max(6.0, 0.3 * len(keys) + 2)), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.bar(range(len(keys)), [math.sqrt(sums[k]) for k in keys], color="C0")
    ax.set_xticks(range(len(keys)), [str(k) for k in keys])
    ax.set_xlabel("layer index")
    ax.set_ylabel("‖ε‖ = ‖w' − w‖")
    ax.set_title(f"Panacea perturbation by layer: {default_model_name(record)}")
    fig.savefig(path, format="png", dpi=110)


def render_chart(out_dir: Path, record: Mapping[str, Any]) -> str | None:
    """Draw :data:`CHART_FILE` in ``out_dir`` from the record; return its name, or None.

    A chart newer than the record is reused. The chart is decoration: when it cannot be drawn
    (no matplotlib, odd statistics) the card just links none, and the patch is never lost.
    """
    out_dir = Path(out_dir)
    layers = _layer_entries(record)
    if not layers:
        return None
    if _chart_is_fresh(out_dir):
        return CHART_FILE
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.info(
            "matplotlib is not installed, so the model card has no per-layer chart;"
            " pip install 'panacea-patch[plots]' to add it"
        )
        return None
    path = out_dir / CHART_FILE
    try:
        from .inspect import plot_report

        plot_report(_inspect_report(record, layers, out_dir), path)
        return CHART_FILE
    except Exception as exc:  # inspect missing or changed: fall back to the simple chart
        logger.debug("the inspect chart failed (%r); drawing the simple one", exc)
    try:
        _plot_simple(record, layers, path)
    except Exception as exc:
        logger.warning("could not draw the per-layer chart (%s); the card links none", exc)
        path.unlink(missing_ok=True)
        return None
    return CHART_FILE


# ---------------------------------------------------------------------------- card


def write_card(
    out_dir: Path, *, source_dir: Path | None, overwrite_readme: bool = False
) -> Path | None:
    """Write (or refresh) the model card ``README.md`` and its chart from ``panacea_patch.json``.

    Args:
        out_dir: a patch output (or the temporary directory it is being written in).
        source_dir: the source checkpoint directory, whose card is kept below ours; defaults to
            the source path in the record when it still exists.
        overwrite_readme: replace a README that panacea-patch did not write.

    Returns:
        The README's path, or None when a user-written README was kept.

    Raises:
        InputError: ``out_dir`` has no readable ``panacea_patch.json``.
    """
    out_dir = Path(out_dir)
    record = _load_record(out_dir)
    source = _source_dir(record, source_dir)
    chart = None
    if readme_is_replaceable(out_dir, source_dir=source, overwrite_readme=overwrite_readme):
        chart = render_chart(out_dir, record)
    return write_model_card(
        out_dir,
        record,
        source_dir=source,
        chart_filename=chart,
        overwrite_readme=overwrite_readme,
    )


# ---------------------------------------------------------------------------- push


def default_commit_message(record: Mapping[str, Any]) -> str:
    """``Add a panacea-patch safety patch (method=panacea, rho=0.05)``, from the record."""
    rho = record.get("rho")
    rho_text = f"{rho:.4g}" if isinstance(rho, (int, float)) else "unknown"
    version = record.get("version")
    made_with = f"panacea-patch {version}" if version else "panacea-patch"
    return (
        f"Add a {made_with} safety patch (method={record.get('method', 'unknown')}, rho={rho_text})"
    )


def publish(
    out_dir: Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    source_dir: Path | None = None,
    overwrite_readme: bool = False,
    progress: bool = True,
) -> PushResult:
    """Refresh the model card of ``out_dir`` and push the whole folder to ``repo_id`` in one commit.

    The repo is created if needed (``private`` applies only then); ``revision`` is a branch,
    created from the default branch if missing; ``create_pr`` opens a pull request instead.
    ``token`` defaults to ``HF_TOKEN`` or the saved login. A README the user wrote is pushed as
    it is unless ``overwrite_readme``. ``progress=False`` hides the client's upload bars.

    Raises:
        InputError: not a patch output, bad repo id or branch, auth or permission problems.
        RuntimeFailure: network or server failure; the local output is left as it was and the
            message gives the ``panacea-patch push`` command that completes the upload.
    """
    out_dir = Path(out_dir)
    check_push_target(repo_id, revision=revision, create_pr=create_pr)
    if not out_dir.is_dir():
        raise InputError(f"{out_dir} is not a directory", hint="pass the output directory to push")
    record = _load_record(out_dir)
    write_card(out_dir, source_dir=source_dir, overwrite_readme=overwrite_readme)
    # The client's bars redraw with \r: only on a terminal (a log gets no upload progress).
    with hub_progress_bars(progress and is_terminal()):
        return push_folder(
            out_dir,
            repo_id,
            private=private,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message,
            token=token,
            default_message=default_commit_message(record),
        )
