"""Hugging Face Hub I/O: download a source snapshot (and the Hub API's public names, re-exported).

Both directions go through the real ``huggingface_hub`` client, with settings read from the
environment at call time (:mod:`.hub_settings`) and every client error mapped to an error that
names the fix (:mod:`.hub_errors`). Publishing lives in :mod:`.hub_push`.
"""

from __future__ import annotations

from pathlib import Path

from . import __version__
from .errors import InputError, PanaceaError, RuntimeFailure
from .hub_errors import _download_error, mapped_errors
from .hub_push import LARGE_FOLDER_BYTES, PushResult, check_push_target, push_folder
from .hub_settings import (
    _COMMIT_SHA,
    _cache_dir,
    _endpoint,
    _offline,
    credentials,
    parse_hub_id,
    scrub_secrets,
)
from .progress import hub_progress_bars, is_terminal

__all__ = [
    "LARGE_FOLDER_BYTES",
    "SOURCE_ALLOW_PATTERNS",
    "PushResult",
    "check_push_target",
    "download_snapshot",
    "parse_hub_id",
    "push_folder",
    "scrub_secrets",
]

SOURCE_ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.model",
    "*.txt",
    "*.jinja",
    "*.tiktoken",
    "*.md",
    "LICENSE*",
]
"""What a patch run needs from a source repo (pass as ``allow_patterns``): configs, tokenizer
files, chat templates, safetensors weights and index, the card and the license. Pickle weights
(``*.bin``, ``*.pt``...) and remote code are left out; add them only when the user opts in."""


def download_snapshot(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    allow_patterns: list[str] | None = None,
) -> tuple[Path, str]:
    """Download (or reuse from the cache) a model repo at ``revision``.

    Args:
        repo_id: ``org/name``.
        revision: branch, tag, ``refs/pr/N`` or commit sha; the default branch when None.
        token: overrides ``HF_TOKEN`` and the saved login.
        allow_patterns: only fetch matching files (glob patterns, as ``snapshot_download``).

    Returns:
        ``(snapshot directory, resolved commit sha)``. The directory is the read-only cache
        snapshot; never write into it.

    Raises:
        InputError: missing repo or revision, gated, private or unauthorized (exit 2).
        RuntimeFailure: network unreachable, server error, offline without a cached copy (exit 1).
    """
    if parse_hub_id(repo_id) != (repo_id, None):
        raise InputError(
            f"{repo_id!r} is not a Hub repository id",
            hint="use org/name and pass the revision separately",
        )
    from huggingface_hub import snapshot_download

    resolved, secrets = credentials(token)

    def error(exc: BaseException) -> PanaceaError:
        authenticated = isinstance(resolved, str)
        return _download_error(exc, repo_id=repo_id, revision=revision, authenticated=authenticated)

    # The client's bars redraw with \r: only on a terminal, never into a log.
    with mapped_errors("snapshot_download", secrets, error), hub_progress_bars(is_terminal()):
        folder = snapshot_download(
            repo_id,
            repo_type="model",
            revision=revision,
            token=resolved,
            endpoint=_endpoint(),
            cache_dir=_cache_dir(),
            allow_patterns=allow_patterns,
            local_files_only=_offline(),
            library_name="panacea-patch",
            library_version=__version__,
        )
    path = Path(folder)
    # The cache lays snapshots out as .../snapshots/<commit sha>.
    if not _COMMIT_SHA.fullmatch(path.name):
        raise RuntimeFailure(
            f"the Hub cache returned {path}, which is not a commit snapshot",
            hint="clear the cache entry with `hf cache delete` and retry",
        )
    if not path.is_dir():
        # The client creates no snapshot folder when no file matched allow_patterns.
        spec = f"{repo_id}@{revision}" if revision else repo_id
        raise InputError(
            f"{spec} has no files that panacea-patch reads (safetensors weights, configs,"
            " tokenizer files)",
            hint="check the repo and revision; a repo with only pickle weights needs"
            " --allow-pickle",
        )
    return path, path.name
