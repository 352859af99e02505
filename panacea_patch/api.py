"""``panacea_patch.patch``: the Python API that the CLI calls."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomic import check_output_path
from .config import PatchConfig
from .errors import InputError, PanaceaError, RuntimeFailure
from .source import resolve_source


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
    # (before, after) EvalReport objects when --eval ran; summarized in ``metrics``, not in JSON.
    reports: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("reports")
        return data


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
    started = time.perf_counter()
    src = resolve_source(
        source,
        revision=cfg.revision,
        allow_pickle=cfg.allow_pickle,
        token=token,
        base_model=cfg.base_model,
    )
    out_path = None if dry_run else Path(out)  # type: ignore[arg-type]
    if out_path is not None:
        check_output_path(out_path, overwrite=cfg.overwrite, source=src.path)
    job = PatchJob(cfg, src, progress=progress, token=token)
    result = job.plan(out_path)
    if out_path is not None:
        job.execute(out_path)
        if cfg.push_to_hub:
            result.push = _push(cfg, out_path, job.src.path, token, progress=progress)
    result.seconds = time.perf_counter() - started
    return result


def _push(
    cfg: PatchConfig, out: Path, source_dir: Path, token: str | None, *, progress: bool
) -> dict[str, Any]:
    """Publish the written output; a failure leaves it in place and says how to retry."""
    from .publish import publish

    try:
        pushed = publish(
            out,
            cfg.push_to_hub,  # type: ignore[arg-type]
            private=cfg.private,
            revision=cfg.hub_revision,
            create_pr=cfg.create_pr,
            commit_message=cfg.commit_message,
            token=token,
            source_dir=source_dir,
            progress=progress,
        )
    except PanaceaError as exc:
        # The patch itself succeeded and is on disk, so this is never a usage error (exit 1).
        raise RuntimeFailure(
            f"the patched model was written to {out}, but the push failed: {exc.message}",
            hint=exc.hint,
        ) from None
    return asdict(pushed)
