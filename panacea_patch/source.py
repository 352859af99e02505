"""Resolve what the user pointed at: a local checkpoint directory or a Hub id ``org/name[@rev]``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from .errors import InputError
from .hub import SOURCE_ALLOW_PATTERNS, parse_hub_id
from .safetensors_io import read_header

INDEX_NAME = "model.safetensors.index.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
PICKLE_INDEX = "pytorch_model.bin.index.json"


@dataclass(frozen=True)
class ResolvedSource:
    """A checkpoint on local disk, with where it came from."""

    spec: str
    path: Path
    kind: Literal["full", "adapter"]
    weight_files: tuple[Path, ...]
    repo_id: str | None = None
    revision: str | None = None
    commit_sha: str | None = None
    base_model: str | None = None
    is_pickle: bool = False
    index: dict | None = field(default=None, compare=False)
    # Set when the source was a GGUF file converted to ``path`` (panacea_patch.gguf.GGUFInfo).
    gguf: dict | None = field(default=None, compare=False)

    @property
    def config(self) -> dict:
        """The model's ``config.json`` (empty for an adapter without one)."""
        p = self.path / "config.json"
        return json.loads(p.read_text()) if p.exists() else {}

    @property
    def adapter_config(self) -> dict:
        p = self.path / ADAPTER_CONFIG
        return json.loads(p.read_text()) if p.exists() else {}


def resolve_source(
    spec: str | Path,
    *,
    revision: str | None = None,
    allow_pickle: bool = False,
    token: str | None = None,
    base_model: str | None = None,
    gguf_file: str | None = None,
    gguf_dtype: str | None = "auto",
) -> ResolvedSource:
    """Find the checkpoint's files, downloading from the Hub when ``spec`` is a Hub id.

    A GGUF source (a ``.gguf`` file, a directory holding one, ``gguf_file`` in a directory or
    Hub repo, or ``org/name[@rev]/FILE.gguf``) is converted once into a cached Hugging Face
    checkpoint stored in ``gguf_dtype`` (see :mod:`panacea_patch.gguf`), which is returned.
    """
    spec = str(spec)
    local = Path(spec).expanduser()
    repo_id = commit = None
    if (gguf_src := _gguf_source(spec, local, gguf_file, revision, token)) is not None:
        from .gguf import gguf_source_dir

        gguf_path, repo_id, revision, commit = gguf_src
        path, info = gguf_source_dir(gguf_path, dtype=gguf_dtype)
        resolved = _inspect_dir(
            spec,
            path,
            repo_id=repo_id,
            revision=revision,
            commit=commit,
            allow_pickle=False,
            base_model=base_model,
        )
        return replace(resolved, gguf=info.to_dict())
    if local.exists():
        if not local.is_dir():
            raise InputError(
                f"source {spec!r} is a file, not a checkpoint directory",
                hint="pass the directory that holds config.json and the *.safetensors files,"
                " or a .gguf file",
            )
        path = local.resolve()
    elif (hub := parse_hub_id(spec)) is not None:
        from .hub import download_snapshot

        repo_id, rev_in_spec = hub
        revision = revision or rev_in_spec
        # Only what a run needs: no pickles unless allowed, never another format's weights.
        patterns = SOURCE_ALLOW_PATTERNS + (
            [f"*{suffix}" for suffix in PICKLE_SUFFIXES] if allow_pickle else []
        )
        path, commit = download_snapshot(
            repo_id, revision=revision, token=token, allow_patterns=patterns
        )
    else:
        raise InputError(
            f"source {spec!r} does not exist",
            hint="pass a local checkpoint directory or a Hub id such as org/name[@revision]",
        )
    return _inspect_dir(
        spec,
        path,
        repo_id=repo_id,
        revision=revision,
        commit=commit,
        allow_pickle=allow_pickle,
        base_model=base_model,
    )


def _gguf_source(
    spec: str, local: Path, gguf_file: str | None, revision: str | None, token: str | None
) -> tuple[Path, str | None, str | None, str | None] | None:
    """(GGUF file, repo id, revision, commit) when ``spec`` names a GGUF source, else None."""
    from .gguf import find_gguf_in_dir, is_gguf_file, parse_hub_gguf

    if local.is_file():
        return (local, None, None, None) if is_gguf_file(local) or gguf_file else None
    if local.is_dir():
        if gguf_file is None and _has_hf_weights(local):
            return None
        found = find_gguf_in_dir(local, gguf_file)
        return (found, None, None, None) if found is not None else None
    if is_gguf_file(local) and parse_hub_gguf(spec) is None:
        raise InputError(f"GGUF file {spec!r} does not exist", hint="check the path")
    hub = parse_hub_id(spec)
    if hub is None and (parsed := parse_hub_gguf(spec)) is not None:
        hub, gguf_file = parsed
    if hub is None or gguf_file is None:
        return None
    from .gguf import download_gguf

    repo_id, rev_in_spec = hub
    revision = revision or rev_in_spec
    path, commit = download_gguf(repo_id, gguf_file, revision=revision, token=token)
    return path, repo_id, revision, commit


def _has_hf_weights(path: Path) -> bool:
    return any(
        f.is_file() and (f.suffix in (".safetensors", *PICKLE_SUFFIXES) or f.name == ADAPTER_CONFIG)
        for f in path.iterdir()
    )


def adapter_base(src: ResolvedSource) -> str:
    """The base model of an adapter source; fails early when it cannot be found.

    A local directory must exist; a Hub id is accepted here and resolved when loading.
    """
    base = src.base_model
    if base and (Path(base).expanduser().is_dir() or parse_hub_id(base) is not None):
        return base
    raise InputError(
        f"the adapter's base model {base!r} cannot be found",
        hint="pass --base-model PATH_OR_HUB_ID pointing at the model the adapter was trained on",
    )


def _inspect_dir(
    spec: str,
    path: Path,
    *,
    repo_id: str | None,
    revision: str | None,
    commit: str | None,
    allow_pickle: bool,
    base_model: str | None,
) -> ResolvedSource:
    common = dict(spec=spec, path=path, repo_id=repo_id, revision=revision, commit_sha=commit)
    if (path / ADAPTER_CONFIG).exists():
        files, is_pickle = _adapter_files(path, allow_pickle)
        base = base_model or json.loads((path / ADAPTER_CONFIG).read_text()).get(
            "base_model_name_or_path"
        )
        return ResolvedSource(
            kind="adapter",
            weight_files=files,
            base_model=base,
            is_pickle=is_pickle,
            **common,  # type: ignore[arg-type]
        )
    files, index, is_pickle = _full_model_files(path, allow_pickle)
    return ResolvedSource(
        kind="full",
        weight_files=files,
        index=index,
        is_pickle=is_pickle,
        base_model=base_model,
        **common,  # type: ignore[arg-type]
    )


def _adapter_files(path: Path, allow_pickle: bool) -> tuple[tuple[Path, ...], bool]:
    st = path / ADAPTER_WEIGHTS
    if st.exists():
        read_header(st)
        return (st,), False
    pickled = path / "adapter_model.bin"
    if pickled.exists():
        _refuse_pickle(pickled, allow_pickle)
        return (pickled,), True
    raise InputError(
        f"adapter directory {path} has adapter_config.json but no {ADAPTER_WEIGHTS}",
        hint="save the adapter with PeftModel.save_pretrained(..., safe_serialization=True)",
    )


def _full_model_files(path: Path, allow_pickle: bool) -> tuple[tuple[Path, ...], dict | None, bool]:
    index_path = path / INDEX_NAME
    if index_path.exists():
        index = _read_index(index_path)
        files = _indexed_files(path, index, index_path)
        for f in files:
            read_header(f)
        return files, index, False
    singles = sorted(path.glob("*.safetensors"))
    singles = [f for f in singles if f.name != "panacea_delta.safetensors"]
    if singles:
        for f in singles:
            read_header(f)
        return tuple(singles), None, False
    pickles = sorted(f for f in path.iterdir() if f.suffix in PICKLE_SUFFIXES)
    if pickles:
        _refuse_pickle(pickles[0], allow_pickle)
        pindex = path / PICKLE_INDEX
        if pindex.exists():
            index = _read_index(pindex)
            return _indexed_files(path, index, pindex), index, True
        return tuple(pickles), None, True
    raise InputError(
        f"no model weights found in {path} (no *.safetensors, {INDEX_NAME} or {ADAPTER_CONFIG})",
        hint="point SOURCE at the directory produced by save_pretrained(); for a GGUF file in a"
        " Hub repo, pass --gguf-file NAME",
    )


def _read_index(index_path: Path) -> dict:
    try:
        index = json.loads(index_path.read_text())
        if not isinstance(index.get("weight_map"), dict):
            raise ValueError("no weight_map")
    except (ValueError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{index_path} is not a valid shard index ({exc})",
            hint="re-save the checkpoint with save_pretrained()",
        ) from None
    return index


def _indexed_files(path: Path, index: dict, index_path: Path) -> tuple[Path, ...]:
    names = sorted(set(index["weight_map"].values()))
    missing = [n for n in names if not (path / n).exists()]
    if missing:
        raise InputError(
            f"{index_path.name} names shard(s) that are missing: {', '.join(missing)}",
            hint="download or copy every shard listed in the index into the same directory",
        )
    return tuple(path / n for n in names)


def _refuse_pickle(file: Path, allow_pickle: bool) -> None:
    if allow_pickle:
        return
    raise InputError(
        f"{file.name} is a pickle checkpoint; loading pickle can run arbitrary code",
        hint="convert it to safetensors, or pass --allow-pickle if you trust its origin",
    )
