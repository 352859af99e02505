"""The layer-wise safety report: where a patch put its perturbation, read from two checkpoints.

The paper's "layer-wise safety coefficients" are the per-layer magnitudes of the optimized ε.
``inspect_patch`` recovers them from the patched checkpoint and its reference alone, streaming one
tensor pair at a time, so it works for patches made by any method, any tool, or by hand.
``panacea_patch.json``, when present, only adds the harmful-gradient share (which cannot be
recomputed from weights) and a cross-check of the recorded realized norm.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .checkpoint import ShardReader
from .errors import InputError
from .inspect_plot import plot_report
from .inspect_report import (
    GroupStats,
    InspectReport,
    LayerStats,
    _aggregate,
    _by_layer,
    _by_module,
)
from .inspect_text import format_report, report_json
from .measure import TensorStats, finish_shares, tensor_stats
from .provenance import PROVENANCE_FILE, read_provenance
from .safetensors_io import TensorInfo, bytes_to_tensor
from .source import ResolvedSource, resolve_source
from .targets import Target, block_index, decoder_block_prefix, module_type

__all__ = [
    "GroupStats",
    "InspectReport",
    "LayerStats",
    "format_report",
    "inspect_patch",
    "plot_report",
    "report_json",
]

_NOT_A_PATCH_HINT = (
    "pass as --reference the exact checkpoint PATCHED was made from "
    "(for a LoRA adapter patch, the source adapter; not the base model)"
)


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
