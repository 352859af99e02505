"""Hugging Face Hub I/O: download a source snapshot, publish a patched output folder.

Both go through the real ``huggingface_hub`` client. Settings are read from the environment at
call time, not when ``huggingface_hub`` was imported, and passed to the client explicitly:

- ``HF_ENDPOINT``: the Hub to talk to (a mirror, or the local test server);
- ``HF_HOME`` / ``HF_HUB_CACHE``: where snapshots are cached;
- ``HF_TOKEN`` (or the token file that ``hf auth login`` writes under ``HF_HOME``): credentials;
- ``HF_HUB_OFFLINE``: use the cache only, never the network.

Every client error is mapped to :class:`~panacea_patch.errors.InputError` (the user can fix it:
missing repo or revision, gated, private, bad token; exit 2) or
:class:`~panacea_patch.errors.RuntimeFailure` (network, server, offline without a cache; exit 1),
with a message that names the problem and the fix. Tokens never reach a message: every text that
leaves this module goes through :func:`scrub_secrets`, and client exceptions are not chained.

Large uploads: :func:`push_folder` makes one ``upload_folder`` commit. With ``huggingface_hub``
2.x that call is itself resumable when ``hf_xet`` is in use (re-running it skips what was already
uploaded). Older clients offer ``HfApi.upload_large_folder`` for that; it is used when the folder
holds at least :data:`LARGE_FOLDER_BYTES` and the client has it (see :func:`push_folder`). On the
plain LFS path, the Hub keeps every uploaded object, so a retried push re-sends only the missing
ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from . import __version__
from .errors import InputError, PanaceaError, RuntimeFailure

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

_SEGMENT = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"{_SEGMENT}/{_SEGMENT}")
_REVISION = re.compile(r"[^\s@~^:?*\[\\]+")
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
# Real Hub tokens are "hf_" + 34 letters and digits; match generously, never identifiers.
_TOKEN_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")
_TOKEN_OPTION = re.compile(r"(--(?:hf-)?token(?:=|\s+))('[^']*'|\"[^\"]*\"|\S+)")
_LOGIN_HINT = "run `hf auth login` or set HF_TOKEN"

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


# ---------------------------------------------------------------------------- ids and settings


def parse_hub_id(spec: str) -> tuple[str, str | None] | None:
    """Recognise ``org/name[@revision]``; return ``(repo_id, revision or None)`` or None.

    Purely syntactic: a relative local path such as ``out/model`` also matches, so callers check
    for a local directory first. The revision may contain ``/`` (``refs/pr/3``, ``feature/x``).
    """
    repo_id, at, revision = spec.strip().partition("@")
    if not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id:
        return None
    if repo_id.endswith(".git"):
        return None
    if not at:
        return repo_id, None
    if (
        not _REVISION.fullmatch(revision)
        or revision.startswith("/")
        or revision.endswith(("/", "."))
        or ".." in revision
        or "//" in revision
    ):
        return None
    return repo_id, revision


def _endpoint() -> str:
    """``HF_ENDPOINT`` as it is now (the client read it once, at import)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _hf_home() -> Path:
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "huggingface"


def _cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return _hf_home() / "hub"


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def _token_path() -> Path:
    if os.environ.get("HF_TOKEN_PATH"):
        return Path(os.environ["HF_TOKEN_PATH"]).expanduser()
    return _hf_home() / "token"


def _resolve_token(token: str | None) -> str | bool | None:
    """The token to send: explicit, then ``HF_TOKEN``, then the saved login under ``HF_HOME``.

    Returns False (anonymous) when ``HF_HOME`` moved away from where the client looked at import
    time and holds no login: the client's own lookup would read a stale location. None lets the
    client decide (its token file, or a CI identity token).
    """
    if token:
        return token
    env = (os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or "").strip()
    if env:
        return env
    path = _token_path()
    try:
        saved = path.read_text().strip()
    except OSError:
        saved = ""
    if saved:
        return saved
    from huggingface_hub import constants

    if path.resolve() != Path(constants.HF_TOKEN_PATH).expanduser().resolve():
        return False
    return None


def _known_secrets(*tokens: str | bool | None) -> tuple[str, ...]:
    found = [t for t in tokens if isinstance(t, str)]
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(name):
            found.append(os.environ[name].strip())
    with contextlib.suppress(OSError):
        found.append(_token_path().read_text().strip())  # the saved `hf auth login` token
    return tuple(sorted({s for s in found if len(s) >= 4}, key=len, reverse=True))


def scrub_secrets(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """Remove credentials from ``text``: the given secrets, ``HF_TOKEN``, anything token-shaped.

    Covers the exact values in ``secrets`` and in ``HF_TOKEN``, strings shaped like Hub tokens
    (``hf_`` + 30 or more letters and digits), ``Bearer ...`` values and ``--token VALUE`` options.
    Use it on anything written where a user or a log can read it.
    """
    for secret in sorted({*secrets, *_known_secrets()}, key=len, reverse=True):
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _TOKEN_LIKE.sub("hf_***", text)
    text = _BEARER.sub(r"\1***", text)
    return _TOKEN_OPTION.sub(r"\1***", text)


# ---------------------------------------------------------------------------- error mapping

_Kind = Literal[
    "gated",
    "repo",
    "revision",
    "entry",
    "offline",
    "unauthorized",
    "forbidden",
    "server",
    "rejected",
    "network",
    "transfer",
    "value",
    "other",
]


@dataclass(frozen=True)
class _Failure:
    kind: _Kind
    reason: str


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 20:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )


def _network_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests.exceptions", ("ConnectionError", "Timeout")),
    ):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        types.extend(getattr(mod, name) for name in names if hasattr(mod, name))
    return tuple(types)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _first_line(text: str, limit: int = 240) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _http_reason(exc: BaseException) -> str:
    status = _status(exc)
    server = getattr(exc, "server_message", None) or ""
    reason = f"HTTP {status}" if status else type(exc).__name__
    return f"{reason}: {_first_line(server)}" if server else reason


def _classify(exc: BaseException) -> _Failure:
    """Find what went wrong, looking through the whole exception chain."""
    from huggingface_hub import errors as hf_errors

    chain = list(_chain(exc))

    def find(*types: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, types)), None)

    # An LFS transfer failure is wrapped in a RuntimeError naming the file: whatever the storage
    # answered (even 403 for an expired URL), it is a failed transfer, not a permission problem.
    upload = next((e for e in chain if str(e).startswith("Error while uploading")), None)
    if upload is not None:
        inner = next((e for e in chain if e is not upload), None)
        detail = _http_reason(inner) if inner is not None and _status(inner) else ""
        if not detail and inner is not None:
            detail = f"{type(inner).__name__}: {_first_line(str(inner))}"
        what = _first_line(str(upload)).rstrip(".")
        return _Failure("transfer", f"{what}: {detail or 'no detail'}")
    # Most specific first: a gated repo is also a "repository not found" error.
    typed: tuple[tuple[_Kind, type[BaseException]], ...] = (
        ("gated", hf_errors.GatedRepoError),
        ("repo", hf_errors.RepositoryNotFoundError),
        ("revision", hf_errors.RevisionNotFoundError),
        # huggingface_hub < 1.0 has no RemoteEntryNotFoundError, only its parent.
        ("entry", getattr(hf_errors, "RemoteEntryNotFoundError", hf_errors.EntryNotFoundError)),
    )
    for typed_kind, error_type in typed:
        if (found := find(error_type)) is not None:
            return _Failure(typed_kind, _http_reason(found))
    if find(hf_errors.OfflineModeIsEnabled) is not None or (
        _offline() and find(hf_errors.LocalEntryNotFoundError) is not None
    ):
        return _Failure("offline", "HF_HUB_OFFLINE is set")
    if (http := find(hf_errors.HfHubHTTPError)) is not None:
        status = _status(http) or 0
        kind: _Kind = "rejected"
        if status == 401:
            kind = "unauthorized"
        elif status == 403:
            kind = "forbidden"
        elif status >= 500 or status in (408, 429):
            kind = "server"
        return _Failure(kind, _http_reason(http))
    if (net := find(*_network_types())) is not None:
        return _Failure("network", f"{type(net).__name__}: {_first_line(str(net)) or 'no answer'}")
    if (local := find(hf_errors.LocalEntryNotFoundError)) is not None:
        return _Failure("network", _first_line(str(local)))
    if (value := find(ValueError)) is not None:
        return _Failure("value", _first_line(str(value)))
    return _Failure("other", f"{type(exc).__name__}: {_first_line(str(exc))}")


def _download_error(
    exc: BaseException, *, repo_id: str, revision: str | None, authenticated: bool
) -> PanaceaError:
    failure = _classify(exc)
    endpoint = _endpoint()
    spec = f"{repo_id}@{revision}" if revision else repo_id
    reason = failure.reason
    if failure.kind == "gated":
        state = "this token has not been granted access" if authenticated else "no token was sent"
        return InputError(
            f"{repo_id} is a gated repository and {state} ({reason})",
            hint=f"request access at {endpoint}/{repo_id}, then {_LOGIN_HINT}",
        )
    if failure.kind == "repo":
        why = "the token has no access to it" if authenticated else "no token was sent"
        return InputError(
            f"Hub repository {repo_id} was not found, or it is private and {why} ({reason})",
            hint=f"check the id (org/name); for a private repo {_LOGIN_HINT} to a token that can read it",
        )
    if failure.kind in ("revision", "entry"):
        return InputError(
            f"revision '{revision or 'main'}' was not found in {repo_id} ({reason})",
            hint=f"pass an existing branch, tag or full commit sha: {repo_id}@REVISION",
        )
    if failure.kind == "unauthorized":
        return InputError(
            f"the Hub rejected the credentials while downloading {spec} ({reason})",
            hint=f"{_LOGIN_HINT} to a valid token",
        )
    if failure.kind == "forbidden":
        return InputError(
            f"the token may not read {spec} ({reason})",
            hint=f"use a token with read access: {_LOGIN_HINT}",
        )
    if failure.kind == "offline":
        return RuntimeFailure(
            f"{spec} is not in the local cache and HF_HUB_OFFLINE is set",
            hint="unset HF_HUB_OFFLINE to download it, or pass a local checkpoint directory",
        )
    if failure.kind == "network":
        return RuntimeFailure(
            f"cannot reach the Hub at {endpoint} to download {spec}, and it is not cached ({reason})",
            hint="check the network connection and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use a cached copy",
        )
    if failure.kind == "server":
        return RuntimeFailure(
            f"the Hub at {endpoint} failed while serving {spec} ({reason})",
            hint="retry later, or set HF_HUB_OFFLINE=1 to use a cached copy",
        )
    return RuntimeFailure(
        f"downloading {spec} from {endpoint} failed ({reason})",
        hint="retry; if it persists, download it with `hf download` and pass the local directory",
    )


def _scrubbed(error: PanaceaError, secrets: tuple[str, ...]) -> PanaceaError:
    """The same error with every secret removed from its message and hint."""
    message = scrub_secrets(error.message, secrets)
    hint = scrub_secrets(error.hint, secrets) if error.hint else None
    return type(error)(message, hint=hint)


# ---------------------------------------------------------------------------- download


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

    resolved = _resolve_token(token)
    secrets = _known_secrets(token, resolved)
    try:
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
    except Exception as exc:
        logger.debug("snapshot_download failed: %s", scrub_secrets(repr(exc), secrets))
        error = _download_error(
            exc, repo_id=repo_id, revision=revision, authenticated=isinstance(resolved, str)
        )
        # Not chained: the client's exception text is not ours to vouch for.
        raise _scrubbed(error, secrets) from None
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


# ---------------------------------------------------------------------------- push


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


def _push_error(exc: BaseException, *, folder: Path, repo_id: str, retry: str) -> PanaceaError:
    failure = _classify(exc)
    intact = f"the local output in {folder} is intact"
    reason = failure.reason
    then = f"then retry: `{retry}`"
    if failure.kind in ("gated", "repo"):
        return InputError(
            f"cannot push to {repo_id}: the repository was not found or the token cannot write"
            f" to it ({reason}); {intact}",
            hint=f"check the repo id; {_LOGIN_HINT} to a token with write access, {then}",
        )
    if failure.kind == "unauthorized":
        return InputError(
            f"cannot push to {repo_id}: the Hub did not accept the credentials ({reason}); {intact}",
            hint=f"{_LOGIN_HINT} to a token with write access, {then}",
        )
    if failure.kind == "forbidden":
        return InputError(
            f"cannot push to {repo_id}: the token may not write there ({reason}); {intact}",
            hint=f"use a token with write access to {repo_id} ({_LOGIN_HINT}), {then}",
        )
    if failure.kind in ("revision", "entry"):
        return InputError(
            f"cannot push to {repo_id}: the target revision was not found ({reason}); {intact}",
            hint=f"pass an existing branch or a new branch name with --revision, {then}",
        )
    if failure.kind == "offline":
        return RuntimeFailure(
            f"cannot push to {repo_id} while HF_HUB_OFFLINE is set; {intact}",
            hint=f"unset HF_HUB_OFFLINE, {then}",
        )
    if failure.kind == "value":
        return InputError(
            f"cannot push {folder} to {repo_id}: {reason}; {intact}",
            hint=f"fix the problem above, {then}",
        )
    what = {
        "network": f"cannot reach the Hub at {_endpoint()}",
        "server": "the Hub failed",
        "transfer": "a file upload failed",
        "rejected": "the Hub refused a request",
    }.get(failure.kind, "the upload failed")
    return RuntimeFailure(
        f"pushing {folder} to {repo_id} did not complete: {what} ({reason}); {intact}",
        hint=f"retry with `{retry}`; files already uploaded are not sent again",
    )


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
    resolved = _resolve_token(token)
    secrets = _known_secrets(token, resolved)
    try:
        return _push(
            folder,
            repo_id,
            private=private,
            revision=None if create_pr else revision,
            create_pr=create_pr,
            commit_message=commit_message or default_message,
            token=resolved,
        )
    except PanaceaError:
        raise
    except Exception as exc:
        logger.debug("push to %s failed: %s", repo_id, scrub_secrets(repr(exc), secrets))
        error = _push_error(exc, folder=folder, repo_id=repo_id, retry=retry)
        raise _scrubbed(error, secrets) from None


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
