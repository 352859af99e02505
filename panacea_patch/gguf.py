"""GGUF sources: read a ``.gguf`` file into a normal Hugging Face checkpoint.

llama.cpp's GGUF files hold the weights (often block-quantized), the model's hyperparameters and
its tokenizer, chat template included. transformers reads them (``from_pretrained(dir,
gguf_file=name)``, with the optional ``gguf`` package) and dequantizes every tensor, but the model
it returns refuses ``save_pretrained``. :func:`convert_gguf` writes what the rest of panacea-patch
reads: safetensors weights, ``config.json`` (without ``quantization_config``), the tokenizer files
with the chat template, and ``generation_config.json``. It writes through a temporary directory
renamed into place, so a failed conversion leaves nothing behind.

The stored dtype (``dtype="auto"``) is bfloat16 for a quantized file (dequantized 4- or 8-bit
weights carry no more precision than bf16 holds) and the file's own float type for an F32, F16 or
BF16 file. :func:`gguf_source_dir` keeps converted checkpoints in a cache keyed by the file's
sha256 and the dtype, and :func:`download_gguf` fetches one file of a Hub repo.

This module finds the file (a ``.gguf`` in a directory, or one file of a Hub repo) and keeps the
conversion cache; :mod:`panacea_patch.gguf_header` reads and validates the file's header and
:mod:`panacea_patch.gguf_convert` writes the checkpoint. Their public names are re-exported here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import InputError
from .gguf_convert import INFO_FILE, GGUFInfo, convert_gguf, read_info
from .gguf_header import (
    DTYPES,
    GGUF_SUFFIX,
    INSTALL_HINT,
    GGUFHeader,
    find_gguf_in_dir,
    is_gguf_file,
    read_gguf_header,
    require_gguf,
    resolve_dtype,
    supported_architectures,
)
from .hashing import file_sha256

__all__ = [
    "DTYPES",
    "GGUF_SUFFIX",
    "HUB_SIDE_FILES",
    "INFO_FILE",
    "INSTALL_HINT",
    "GGUFHeader",
    "GGUFInfo",
    "cache_root",
    "convert_gguf",
    "download_gguf",
    "file_sha256",
    "find_gguf_in_dir",
    "gguf_source_dir",
    "is_gguf_file",
    "parse_hub_gguf",
    "read_gguf_header",
    "read_info",
    "require_gguf",
    "resolve_dtype",
    "supported_architectures",
]

logger = logging.getLogger(__name__)

# Small files beside a GGUF in a Hub repo that may complete it (chat template, generation config).
HUB_SIDE_FILES = ["*.json", "*.jinja", "*.md", "LICENSE*"]


# ---------------------------------------------------------------------------- cache and Hub


def cache_root() -> Path:
    """``$PANACEA_PATCH_CACHE/gguf``, else ``$XDG_CACHE_HOME`` or ``~/.cache`` + ``panacea-patch/gguf``."""
    if env := os.environ.get("PANACEA_PATCH_CACHE"):
        return Path(env).expanduser() / "gguf"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "panacea-patch" / "gguf"


def gguf_source_dir(gguf_path: str | Path, *, dtype: str | None = "auto") -> tuple[Path, GGUFInfo]:
    """The converted checkpoint of ``gguf_path`` in the cache, converting it on first use.

    Keyed by the file's sha256 (first 16 hex digits) and the stored dtype, so a changed file or
    another ``--dtype`` converts again, and the same file under another name does not.
    """
    src = Path(gguf_path).expanduser().resolve()
    header = read_gguf_header(src)
    stored = resolve_dtype(dtype, header)
    sha = file_sha256(src)
    out = cache_root() / f"{sha[:16]}-{stored}"
    info = read_info(out)
    if info is not None and info.sha256 == sha and info.dtype == stored:
        logger.info("using the converted %s from %s", src.name, out)
        return out, GGUFInfo(**{**info.to_dict(), "path": str(src)})
    logger.info(
        "converting %s (%s) to a %s checkpoint in %s", src.name, header.quantization, stored, out
    )
    try:
        info = convert_gguf(src, out, dtype=dtype or "auto", overwrite=out.exists(), sha256=sha)
    except InputError:
        # Another process may have finished the same conversion first.
        done = read_info(out)
        if done is not None and done.sha256 == sha and done.dtype == stored:
            return out, GGUFInfo(**{**done.to_dict(), "path": str(src)})
        raise
    return out, info


def download_gguf(
    repo_id: str, gguf_file: str, *, revision: str | None = None, token: str | None = None
) -> tuple[Path, str]:
    """Fetch ``gguf_file`` of a Hub repo, plus its small side files; returns (file, commit sha)."""
    from .hub import download_snapshot

    parts = Path(gguf_file).parts if gguf_file else ()
    if (
        not parts
        or ".." in parts
        or Path(gguf_file).is_absolute()
        or not is_gguf_file(Path(gguf_file))
    ):
        raise InputError(
            f"bad --gguf-file {gguf_file!r} for a Hub repo",
            hint="pass the path of a .gguf file inside the repo, e.g. --gguf-file model.Q4_K_M.gguf",
        )
    folder, commit = download_snapshot(
        repo_id, revision=revision, token=token, allow_patterns=[*HUB_SIDE_FILES, gguf_file]
    )
    path = folder / gguf_file
    if not path.is_file():
        spec = f"{repo_id}@{revision}" if revision else repo_id
        raise InputError(
            f"{spec} has no file {gguf_file!r}",
            hint="check the name with `hf download --dry-run` or on the repo's Files page, "
            "and pass it with --gguf-file",
        )
    return path, commit


def parse_hub_gguf(spec: str) -> tuple[tuple[str, str | None], str] | None:
    """``org/name[@rev]/PATH.gguf`` -> ((repo id, revision or None), PATH.gguf); else None."""
    from .hub import parse_hub_id

    parts = spec.strip().split("/")
    if len(parts) < 3 or not parts[-1].lower().endswith(GGUF_SUFFIX):
        return None
    hub = parse_hub_id("/".join(parts[:2]))
    return (hub, "/".join(parts[2:])) if hub is not None else None
