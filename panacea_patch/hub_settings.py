"""Hub ids, the environment every Hub call reads (endpoint, cache, offline, token), and secret scrubbing.

Settings are read from the environment at call time, not when ``huggingface_hub`` was imported:
``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_TOKEN`` (or the token file that
``hf auth login`` writes under ``HF_HOME``) and ``HF_HUB_OFFLINE``. Tokens never reach a message:
every text that leaves the Hub modules goes through :func:`scrub_secrets`.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

_SEGMENT = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"{_SEGMENT}/{_SEGMENT}")
_REVISION = re.compile(r"[^\s@~^:?*\[\\]+")
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
# Real Hub tokens are "hf_" + 34 letters and digits; match generously, never identifiers.
_TOKEN_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")
_TOKEN_OPTION = re.compile(r"(--(?:hf-)?token(?:=|\s+))('[^']*'|\"[^\"]*\"|\S+)")
_LOGIN_HINT = "run `hf auth login` or set HF_TOKEN"


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


def credentials(token: str | None) -> tuple[str | bool | None, tuple[str, ...]]:
    """``(the token to send, every secret to keep out of messages)`` for an explicit ``token``."""
    resolved = _resolve_token(token)
    return resolved, _known_secrets(token, resolved)
