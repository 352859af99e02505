"""``panacea_patch.patch``: the Python API that the CLI calls."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .atomic import atomic_output_dir, check_output_path
from .checkpoint import ShardReader, copy_aux_files, write_patched
from .config import PatchConfig
from .errors import InputError
from .kernels import ops
from .measure import MeasuringTransform, finish_shares
from .provenance import command_line, metadata_entry, now_iso, package_versions, write_provenance
from .source import ResolvedSource, resolve_source
from .targets import Target, select_targets

log = logging.getLogger("panacea_patch")

DEFAULT_RHO_REL = 0.01


@dataclass
class PatchResult:
    """What a patch run did. ``to_dict()`` is the CLI's ``--json`` output."""

    output: str | None
    method: str
    rho: float | None
    realized_norm: float | None
    num_target_tensors: int
    num_target_params: int
    seconds: float
    dry_run: bool = False
    rho_rel: float | None = None
    target_weight_norm: float | None = None
    seed: int = 0
    source: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    optimization: dict[str, Any] = field(default_factory=dict)
    push: dict[str, Any] | None = None
    backend: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def patch(
    source: str | Path,
    out: str | Path | None = None,
    *,
    config: PatchConfig | None = None,
    dry_run: bool = False,
    progress: bool = True,
    token: str | None = None,
    **options: Any,
) -> PatchResult:
    """Patch a fine-tuned checkpoint and write the result to ``out``.

    Options are the fields of :class:`PatchConfig`, given either as ``config=`` or as keyword
    arguments (``method="random", rho=0.5, seed=0``). Nothing is written when ``dry_run``.
    """
    cfg = config if config is not None else PatchConfig(**options)
    if config is not None and options:
        cfg = PatchConfig(**{**cfg.to_dict(), **options})
    if out is None and not dry_run:
        raise InputError("no output directory given", hint="pass --out DIR (or out=...)")
    started = time.perf_counter()
    src = resolve_source(
        source,
        revision=cfg.revision,
        allow_pickle=cfg.allow_pickle,
        token=token,
        base_model=cfg.base_model,
    )
    if out is not None and not dry_run:
        check_output_path(Path(out), overwrite=cfg.overwrite, source=src.path)
    with ShardReader(src) as reader:
        targets = select_targets(
            reader.infos(),
            config=src.config,
            adapter=src.kind == "adapter",
            pattern=cfg.targets,
        )
        result = PatchResult(
            output=None if dry_run else str(Path(out).resolve()),  # type: ignore[arg-type]
            method=cfg.method,
            rho=cfg.rho,
            rho_rel=cfg.rho_rel,
            realized_norm=None,
            num_target_tensors=len(targets),
            num_target_params=sum(t.numel for t in targets),
            seconds=0.0,
            dry_run=dry_run,
            seed=cfg.seed,
            source=_source_dict(src),
            targets=[_target_dict(t) for t in targets],
            backend=ops.backend(),
        )
        if dry_run:
            result.seconds = time.perf_counter() - started
            return result
        _check_adapter_base(src)
        rho = _resolve_rho(cfg, reader, targets, result)
        transform = _make_transform(cfg, src, reader, targets, rho, result)
        _write(cfg, src, reader, targets, transform, Path(out), result, progress)  # type: ignore[arg-type]
    result.seconds = time.perf_counter() - started
    return result


def _resolve_rho(
    cfg: PatchConfig, reader: ShardReader, targets: list[Target], result: PatchResult
) -> float:
    """ρ in absolute units; ``--rho-rel`` is relative to the target weights' norm."""
    if cfg.rho is not None:
        return cfg.rho
    sumsq = sum(float(ops.multi_sumsq([reader.get(t.name)])) for t in targets)
    result.target_weight_norm = math.sqrt(sumsq)
    rel = cfg.rho_rel if cfg.rho_rel is not None else DEFAULT_RHO_REL
    result.rho_rel = rel
    result.rho = rel * result.target_weight_norm
    return result.rho


def _make_transform(cfg, src, reader, targets, rho, result):  # noqa: ANN001, ANN202
    if cfg.method == "random":
        from .methods.random import RandomTransform

        result.rho = rho
        return RandomTransform(targets, rho=rho, seed=cfg.seed)
    raise InputError(f"method {cfg.method!r} is not available yet", hint="use --method random")


def _write(
    cfg: PatchConfig,
    src: ResolvedSource,
    reader: ShardReader,
    targets: list[Target],
    transform: Any,
    out: Path,
    result: PatchResult,
    progress: bool,
) -> None:
    measuring = MeasuringTransform(transform, targets)
    record = _record(cfg, src, result)
    total = sum(i.nbytes for i in reader.infos().values())
    with (
        atomic_output_dir(out, overwrite=cfg.overwrite, source=src.path) as tmp,
        tqdm(
            total=total, unit="B", unit_scale=True, desc="writing", disable=not progress
        ) as bar,
    ):
        report = write_patched(
            reader, tmp, measuring, metadata=metadata_entry(record), progress=bar.update
        )
        copy_aux_files(src.path, tmp)
        result.realized_norm = finish_shares(measuring.stats)
        result.layers = [s.to_dict() for s in measuring.stats]
        record.update(
            realized_norm=result.realized_norm,
            rho=result.rho,
            layers=result.layers,
            output_files=report.output_hashes,
        )
        record["source"]["files"] = report.input_hashes
        write_provenance(tmp, record)
    _warn_if_vanished(result)


def _record(cfg: PatchConfig, src: ResolvedSource, result: PatchResult) -> dict[str, Any]:
    return {
        "tool": "panacea-patch",
        "version": package_versions()["panacea-patch"],
        "created": now_iso(),
        "command": command_line(),
        "source": _source_dict(src),
        "method": cfg.method,
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "rho": result.rho,
        "rho_rel": result.rho_rel,
        "targets": {"count": result.num_target_tensors, "params": result.num_target_params},
        "backend": result.backend,
        "versions": package_versions(),
    }


def _warn_if_vanished(result: PatchResult) -> None:
    if result.rho and result.realized_norm is not None and result.realized_norm < 0.5 * result.rho:
        log.warning(
            "realized |w' - w| = %.4g is well below rho = %.4g: most of the perturbation "
            "vanished when rounding to the stored dtype; use a larger rho or --rounding stochastic",
            result.realized_norm,
            result.rho,
        )


def _source_dict(src: ResolvedSource) -> dict[str, Any]:
    return {
        "spec": src.spec,
        "path": str(src.path),
        "kind": src.kind,
        "repo_id": src.repo_id,
        "revision": src.revision,
        "commit_sha": src.commit_sha,
        "base_model": src.base_model,
    }


def _target_dict(t: Target) -> dict[str, Any]:
    return {"name": t.name, "shape": list(t.shape), "numel": t.numel, "layer": t.layer}


def _check_adapter_base(src: ResolvedSource) -> None:
    """An adapter is only useful with its base: fail early when the base cannot be found."""
    if src.kind != "adapter":
        return
    base = src.base_model
    if base and Path(base).expanduser().is_dir():
        return
    from .source import parse_hub_id

    if base and parse_hub_id(base) is not None:
        return  # a Hub id: resolved when the model is loaded (needs the network or the cache)
    raise InputError(
        f"the adapter's base model {base!r} cannot be found",
        hint="pass --base-model PATH_OR_HUB_ID pointing at the model the adapter was trained on",
    )
