"""Hub client exceptions mapped to errors that name the problem and the fix.

Every client error becomes :class:`~panacea_patch.errors.InputError` (the user can fix it: missing
repo or revision, gated, private, bad token; exit 2) or
:class:`~panacea_patch.errors.RuntimeFailure` (network, server, offline without a cache; exit 1).
Client exceptions are not chained and every message is scrubbed of secrets.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import InputError, PanaceaError, RuntimeFailure
from .hub_settings import _LOGIN_HINT, _endpoint, _offline, scrub_secrets

logger = logging.getLogger(__name__)

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


# What each kind of failure means for a download and for a push: (error class, message, fix).
# The {fields} are filled in by _download_error and _push_error; every kind not listed is "other".
_Table = dict[str, tuple[type[PanaceaError], str, str]]
_DOWNLOAD: _Table = {
    "gated": (
        InputError,
        "{repo_id} is a gated repository and {not_granted} ({reason})",
        "request access at {endpoint}/{repo_id}, then {login}",
    ),
    "repo": (
        InputError,
        "Hub repository {repo_id} was not found, or it is private and {no_access} ({reason})",
        "check the id (org/name); for a private repo {login} to a token that can read it",
    ),
    "revision": (
        InputError,
        "revision '{revision}' was not found in {repo_id} ({reason})",
        "pass an existing branch, tag or full commit sha: {repo_id}@REVISION",
    ),
    "unauthorized": (
        InputError,
        "the Hub rejected the credentials while downloading {spec} ({reason})",
        "{login} to a valid token",
    ),
    "forbidden": (
        InputError,
        "the token may not read {spec} ({reason})",
        "use a token with read access: {login}",
    ),
    "offline": (
        RuntimeFailure,
        "{spec} is not in the local cache and HF_HUB_OFFLINE is set",
        "unset HF_HUB_OFFLINE to download it, or pass a local checkpoint directory",
    ),
    "network": (
        RuntimeFailure,
        "cannot reach the Hub at {endpoint} to download {spec}, and it is not cached ({reason})",
        "check the network connection and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use a cached"
        " copy",
    ),
    "server": (
        RuntimeFailure,
        "the Hub at {endpoint} failed while serving {spec} ({reason})",
        "retry later, or set HF_HUB_OFFLINE=1 to use a cached copy",
    ),
    "other": (
        RuntimeFailure,
        "downloading {spec} from {endpoint} failed ({reason})",
        "retry; if it persists, download it with `hf download` and pass the local directory",
    ),
}
_PUSH: _Table = {
    "repo": (
        InputError,
        "cannot push to {repo_id}: the repository was not found or the token cannot write to it"
        " ({reason}); {intact}",
        "check the repo id; {login} to a token with write access, {then}",
    ),
    "unauthorized": (
        InputError,
        "cannot push to {repo_id}: the Hub did not accept the credentials ({reason}); {intact}",
        "{login} to a token with write access, {then}",
    ),
    "forbidden": (
        InputError,
        "cannot push to {repo_id}: the token may not write there ({reason}); {intact}",
        "use a token with write access to {repo_id} ({login}), {then}",
    ),
    "revision": (
        InputError,
        "cannot push to {repo_id}: the target revision was not found ({reason}); {intact}",
        "pass an existing branch or a new branch name with --revision, {then}",
    ),
    "offline": (
        RuntimeFailure,
        "cannot push to {repo_id} while HF_HUB_OFFLINE is set; {intact}",
        "unset HF_HUB_OFFLINE, {then}",
    ),
    "value": (
        InputError,
        "cannot push {folder} to {repo_id}: {reason}; {intact}",
        "fix the problem above, {then}",
    ),
    "other": (
        RuntimeFailure,
        "pushing {folder} to {repo_id} did not complete: {what} ({reason}); {intact}",
        "retry with `{retry}`; files already uploaded are not sent again",
    ),
}
_SAME = {"entry": "revision"}  # a missing file at a revision reads as a missing revision


def _mapped(table: _Table, kind: str, **fields: object) -> PanaceaError:
    error_type, message, hint = table.get(_SAME.get(kind, kind)) or table["other"]
    fields["login"] = _LOGIN_HINT
    return error_type(message.format(**fields), hint=hint.format(**fields))


def _download_error(
    exc: BaseException, *, repo_id: str, revision: str | None, authenticated: bool
) -> PanaceaError:
    failure = _classify(exc)
    return _mapped(
        _DOWNLOAD,
        failure.kind,
        repo_id=repo_id,
        revision=revision or "main",
        spec=f"{repo_id}@{revision}" if revision else repo_id,
        reason=failure.reason,
        endpoint=_endpoint(),
        not_granted=(
            "this token has not been granted access" if authenticated else "no token was sent"
        ),
        no_access="the token has no access to it" if authenticated else "no token was sent",
    )


def _push_error(exc: BaseException, *, folder: Path, repo_id: str, retry: str) -> PanaceaError:
    failure = _classify(exc)
    what = {
        "network": f"cannot reach the Hub at {_endpoint()}",
        "server": "the Hub failed",
        "transfer": "a file upload failed",
        "rejected": "the Hub refused a request",
    }.get(failure.kind, "the upload failed")
    return _mapped(
        _PUSH,
        "repo" if failure.kind == "gated" else failure.kind,
        repo_id=repo_id,
        folder=folder,
        reason=failure.reason,
        intact=f"the local output in {folder} is intact",
        then=f"then retry: `{retry}`",
        retry=retry,
        what=what,
    )


def _scrubbed(error: PanaceaError, secrets: tuple[str, ...]) -> PanaceaError:
    """The same error with every secret removed from its message and hint."""
    message = scrub_secrets(error.message, secrets)
    hint = scrub_secrets(error.hint, secrets) if error.hint else None
    return type(error)(message, hint=hint)


@contextlib.contextmanager
def mapped_errors(
    what: str, secrets: tuple[str, ...], to_error: Callable[[BaseException], PanaceaError]
) -> Iterator[None]:
    """Inside the block, a client exception becomes ``to_error(exc)`` without any secret.

    Not chained: the client's exception text is not ours to vouch for; it goes to the DEBUG log,
    scrubbed, as ``<what> failed: ...``. Our own errors pass through unchanged.
    """
    try:
        yield
    except PanaceaError:
        raise
    except Exception as exc:
        logger.debug("%s failed: %s", what, scrub_secrets(repr(exc), secrets))
        raise _scrubbed(to_error(exc), secrets) from None
