"""Writing the finished model: a full checkpoint in BASE's layout, or a PEFT LoRA adapter."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import ShardReader, copy_aux_files, file_sha256, write_patched

log = logging.getLogger("panacea_patch")

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def write_full(model: Any, lm: Any, out: Path, metadata: dict[str, str]) -> dict[str, str]:
    """The live weights in BASE's exact layout: its tensor names, dtypes and shards.

    Each trained tensor is cast to BASE's stored dtype (round to nearest even); everything else
    (config, tokenizer, generation settings) is copied. Returns the output files' sha256.
    """
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    if trainable - set(lm.param_to_tensor):
        return _save_pretrained(model, lm, out, trainable - set(lm.param_to_tensor))
    by_tensor = {t: params[n] for n, t in lm.param_to_tensor.items() if n in params}

    def transform(name: str, w0: torch.Tensor) -> torch.Tensor | None:
        p = by_tensor.get(name)
        return None if p is None else p.detach().to(device="cpu", dtype=w0.dtype)

    with ShardReader(lm.source) as reader:
        report = write_patched(reader, out, transform, metadata=metadata)
    copy_aux_files(lm.source.path, out)
    return report.output_hashes


def _save_pretrained(model: Any, lm: Any, out: Path, unmapped: set[str]) -> dict[str, str]:
    # Some architectures rename parameters on load (transformers' weight conversions), so the
    # BASE layout cannot hold them: fall back to transformers' own serialization.
    log.warning(
        "%d trained parameter(s), e.g. %r, have no tensor of the same name in BASE; writing "
        "with save_pretrained instead of BASE's layout",
        len(unmapped),
        sorted(unmapped)[0],
    )
    model.save_pretrained(out, safe_serialization=True)
    lm.tokenizer.save_pretrained(out)
    return {f.name: file_sha256(f) for f in sorted(out.glob("*.safetensors"))}


def write_adapter(
    model: Any, tokenizer: Any, out: Path, src: Any, metadata: dict[str, str]
) -> dict[str, str]:
    """The PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``) and tokenizer.

    The adapter names BASE by its Hub id (with the commit as revision) or its absolute path, so
    ``PeftModel.from_pretrained`` and ``panacea-patch`` find it.
    """
    for peft_config in model.peft_config.values():
        peft_config.base_model_name_or_path = base_ref(src)
        if src.repo_id:
            peft_config.revision = src.commit_sha or src.revision
    model.save_pretrained(out, safe_serialization=True)
    # PEFT writes a template card; ours is generated from panacea_patch.json instead.
    (out / "README.md").unlink(missing_ok=True)
    tokenizer.save_pretrained(out)
    weights = out / ADAPTER_WEIGHTS
    _add_metadata(weights, metadata)
    return {weights.name: file_sha256(weights)}


def base_ref(src: Any) -> str:
    """How an adapter names its base: the Hub id, or the absolute local path."""
    return str(src.repo_id) if src.repo_id else str(Path(src.path).resolve())


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Add the provenance entry to a (small) safetensors file's header."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        existing = f.metadata() or {}
    save_file(load_file(str(path)), str(path), metadata={**existing, **metadata})
