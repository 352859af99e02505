"""Publishing to the Hub: one commit (or a resumable upload) of a whole output folder.

Large uploads: :func:`push_folder` makes one ``upload_folder`` commit. With ``huggingface_hub``
2.x that call is itself resumable when ``hf_xet`` is in use (re-running it skips what was already
uploaded). Older clients offer ``HfApi.upload_large_folder`` for that; it is used when the folder
holds at least :data:`LARGE_FOLDER_BYTES` and the client has it (see :func:`push_folder`). On the
plain LFS path, the Hub keeps every uploaded object, so a retried push re-sends only the missing
ones.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from . import __version__
from .errors import InputError, PanaceaError
from .hub_errors import _push_error, mapped_errors
from .hub_settings import (
    _COMMIT_SHA,
    _endpoint,
    _offline,
    credentials,
    parse_hub_id,
)

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

logger = logging.getLogger(__name__)

LARGE_FOLDER_BYTES = 50 * 1024**3
"""Folders at least this big go through ``upload_large_folder`` when the client has it.

50 GiB: below that a single commit finishes in reasonable time and gives one commit URL (and
PRs and commit messages work); above it, an interrupted single commit wastes too much. The
multi-commit uploader cannot open a PR or take a commit message, so ``create_pr`` always uses
``upload_folder``.
"""


@dataclass(frozen=True)
class PushResult:
    """Where a push landed. ``pr_url`` is set when a pull request was opened."""

    repo_url: str
    commit_url: str
    pr_url: str | None
    commit_sha: str


def _folder_size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file() and ".git" not in p.parts]
    return sum(p.stat().st_size for p in files), len(files)


def _retry_command(
    folder: Path,
    repo_id: str,
    *,
    private: bool,
    revision: str | None,
    create_pr: bool,
    commit_message: str | None,
) -> str:
    argv = ["panacea-patch", "push", str(folder), repo_id]
    if private:
        argv.append("--private")
    if revision:
        argv += ["--revision", revision]
    if create_pr:
        argv.append("--create-pr")
    if commit_message:
        argv += ["--commit-message", commit_message]
    return shlex.join(argv)


def _use_large_folder_upload(api: object, total_bytes: int, *, create_pr: bool) -> bool:
    return (
        total_bytes >= LARGE_FOLDER_BYTES
        and not create_pr
        and callable(getattr(api, "upload_large_folder", None))
    )


def check_push_target(
    repo_id: str, *, revision: str | None = None, create_pr: bool = False
) -> None:
    """Check where a push would go, before any work or network: raise :class:`InputError` if bad.

    ``repo_id`` must be ``org/name``; ``revision`` a branch name (not a commit sha); a pull
    request always targets the default branch, so ``create_pr`` excludes another branch.
    """
    if parse_hub_id(repo_id) != (repo_id, None):
        raise InputError(
            f"{repo_id!r} is not a Hub repository id",
            hint="use org/name, e.g. my-org/model-panacea",
        )
    if revision is None:
        return
    if parse_hub_id(f"{repo_id}@{revision}") != (repo_id, revision):
        raise InputError(
            f"{revision!r} is not a valid branch name",
            hint="pass a branch name such as panacea or feature/x",
        )
    if _COMMIT_SHA.fullmatch(revision):
        raise InputError(
            f"the push target {revision} is a commit sha; a push needs a branch",
            hint="pass a branch name (it is created if missing)",
        )
    if create_pr and revision != "main":
        raise InputError(
            "a pull request is opened against the default branch, so it cannot target the"
            f" branch {revision}",
            hint="drop the branch (--revision / --hub-revision) to open a PR, or drop --create-pr"
            " to commit to that branch",
        )


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    default_message: str | None = None,
) -> PushResult:
    """Publish every file of ``folder`` to the model repo ``repo_id`` in one commit.

    Creates the repo if needed (``private`` applies only then), and the branch ``revision`` if it
    does not exist yet (from the default branch). With ``create_pr`` the commit opens a pull
    request against the default branch instead. Folders of :data:`LARGE_FOLDER_BYTES` or more go
    through the client's resumable multi-commit uploader when it has one (no PR, no message).

    If nothing changed since the last commit, no commit is made and the result points at the
    current head (``pr_url`` stays None even with ``create_pr``).

    ``default_message`` is the commit title when ``commit_message`` is None; unlike an explicit
    message it is left out of the retry command in errors (the retry derives it again).

    Raises:
        InputError: bad folder or repo id, auth or permission problems (exit 2).
        RuntimeFailure: network or server failure; the message says the local output is intact
            and gives the ``panacea-patch push`` command that resumes the upload (exit 1).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a directory", hint="pass the output directory to push")
    check_push_target(repo_id, revision=revision, create_pr=create_pr)
    retry = _retry_command(
        folder,
        repo_id,
        private=private,
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message,
    )
    resolved, secrets = credentials(token)

    def error(exc: BaseException) -> PanaceaError:
        return _push_error(exc, folder=folder, repo_id=repo_id, retry=retry)

    with mapped_errors(f"push to {repo_id}", secrets, error):
        return _push(
            folder,
            repo_id,
            private=private,
            revision=None if create_pr else revision,
            create_pr=create_pr,
            commit_message=commit_message or default_message,
            token=resolved,
        )


def _push(
    folder: Path,
    repo_id: str,
    *,
    private: bool,
    revision: str | None,
    create_pr: bool,
    commit_message: str | None,
    token: str | bool | None,
) -> PushResult:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    if _offline():
        raise OfflineModeIsEnabled("HF_HUB_OFFLINE is set")
    endpoint = _endpoint()
    api = HfApi(
        endpoint=endpoint, token=token, library_name="panacea-patch", library_version=__version__
    )
    repo_url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    total, count = _folder_size(folder)
    logger.info("pushing %d files (%.1f MB) to %s", count, total / 1e6, repo_id)
    message = commit_message or f"Upload safety-patched model (panacea-patch {__version__})"
    if _use_large_folder_upload(api, total, create_pr=create_pr):
        api.upload_large_folder(  # type: ignore[attr-defined]
            repo_id=repo_id, folder_path=folder, repo_type="model", revision=revision
        )
        sha = api.repo_info(repo_id, repo_type="model", revision=revision).sha or ""
        return PushResult(str(repo_url), f"{endpoint}/{repo_id}/commit/{sha}", None, sha)
    info = cast(
        "CommitInfo",
        api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=revision,
            create_pr=create_pr,
            commit_message=message,
        ),
    )
    return PushResult(
        repo_url=str(repo_url),
        commit_url=info.commit_url,
        pr_url=info.pr_url,
        commit_sha=info.oid,
    )
