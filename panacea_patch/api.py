"""``panacea_patch.patch``: the Python API that the CLI calls."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .atomic import check_output_path
from .config import PatchConfig
from .diskspace import check_free_space, delta_bytes, disk_full_is_a_failure, output_bytes
from .errors import InputError, PanaceaError, RuntimeFailure
from .options import hub_options
from .progress import progress_interval
from .result import PatchResult
from .source import resolve_source

__all__ = ["PatchResult", "patch"]


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
    arguments (``method="random", rho=0.5, seed=0``); keyword arguments override ``config``.
    Nothing is written when ``dry_run``, and nothing is left behind when the run fails or is
    interrupted. ``token`` is a Hub token (default: ``HF_TOKEN`` / the saved login).
    """
    from .job import PatchJob

    cfg = config if config is not None else PatchConfig(**options)
    if config is not None and options:
        cfg = PatchConfig(**{**cfg.to_dict(), **options})
    if out is None and not dry_run:
        raise InputError("no output directory given", hint="pass --out DIR (or out=...)")
    if cfg.push_to_hub:
        from .hub import check_push_target

        # Before any work: a bad repo id should not surface after an hour of optimizing.
        check_push_target(cfg.push_to_hub, revision=cfg.hub_revision, create_pr=cfg.create_pr)
    with progress_interval(cfg.progress_interval):
        started = time.perf_counter()
        src = resolve_source(
            source,
            revision=cfg.revision,
            allow_pickle=cfg.allow_pickle,
            token=token,
            base_model=cfg.base_model,
            gguf_file=cfg.gguf_file,
            gguf_dtype=cfg.dtype,
        )
        out_path = None if dry_run else Path(out)  # type: ignore[arg-type]
        if out_path is not None:
            check_output_path(out_path, overwrite=cfg.overwrite, source=src.path)
            if src.gguf:  # the converted checkpoint is a cache; the GGUF file is the real source
                check_output_path(out_path, overwrite=cfg.overwrite, source=Path(src.gguf["path"]))
        job = PatchJob(cfg, src, progress=progress, token=token)
        result = job.plan(out_path)
        if out_path is not None:
            needed, delta = _output_size(job, cfg)
            check_free_space(out_path, needed, delta=delta)  # before any work
            with disk_full_is_a_failure(out_path, needed):
                job.execute(out_path)
            if cfg.push_to_hub:
                result.push = _push(cfg, out_path, job.src.path, token, progress=progress)
        result.seconds = time.perf_counter() - started
        return result


def _output_size(job: Any, cfg: PatchConfig) -> tuple[int, int]:
    """(bytes the output needs, of which ε's file) for the planned run."""
    targets = job.targets
    delta = delta_bytes(sum(t.numel for t in targets), len(targets)) if cfg.save_delta else 0
    return output_bytes(job.src.weight_files, job.src.path, delta=delta), delta


def _push(
    cfg: PatchConfig, out: Path, source_dir: Path, token: str | None, *, progress: bool
) -> dict[str, Any]:
    """Publish the written output; a failure leaves it in place and says how to retry."""
    from .publish import publish

    try:
        pushed = publish(
            out,
            cfg.push_to_hub,  # type: ignore[arg-type]
            token=token,
            source_dir=source_dir,
            progress=progress,
            **hub_options(cfg),
        )
    except PanaceaError as exc:
        # The patch itself succeeded and is on disk, so this is never a usage error (exit 1).
        raise RuntimeFailure(
            f"the patched model was written to {out}, but the push failed: {exc.message}",
            hint=exc.hint,
        ) from None
    return asdict(pushed)
