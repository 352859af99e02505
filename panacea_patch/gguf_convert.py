"""Convert one GGUF file into a Hugging Face checkpoint directory (safetensors, config, tokenizer).

:func:`convert_gguf` loads the file through transformers (dequantizing every tensor), then writes
safetensors weights, ``config.json`` without ``quantization_config``, the tokenizer files with the
chat template, ``generation_config.json`` and a hidden :class:`GGUFInfo` record, all through a
temporary directory renamed into place. Part of :mod:`panacea_patch.gguf`, which re-exports it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_output_dir
from .errors import InputError, RuntimeFailure
from .gguf_header import read_gguf_header, resolve_dtype
from .hashing import file_sha256

# The GGUF modules share the logger of panacea_patch.gguf, as before they were split.
logger = logging.getLogger("panacea_patch.gguf")

INFO_FILE = ".panacea_gguf.json"
"""Hidden record of the :class:`GGUFInfo` inside a converted directory (not copied to outputs)."""


@dataclass(frozen=True)
class GGUFInfo:
    """What was converted: the file, its identity, and how its weights were stored."""

    path: str
    sha256: str
    size: int
    architecture: str
    quantization: str  # "Q4_1", "Q8_0", "F16", "F32"...
    dequantized: bool  # True when any tensor was block-quantized in the file
    dtype: str  # the dtype written: "float32", "bfloat16" or "float16"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def convert_gguf(
    gguf_path: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "auto",
    overwrite: bool = False,
    sha256: str | None = None,
) -> GGUFInfo:
    """Write ``gguf_path`` as a Hugging Face checkpoint in ``out_dir``.

    ``out_dir`` gets ``model.safetensors``, ``config.json`` (no ``quantization_config``), the
    tokenizer files with the chat template, ``generation_config.json`` and a hidden
    ``.panacea_gguf.json`` holding the returned :class:`GGUFInfo`. ``dtype`` is ``auto``
    (bfloat16 for a quantized file, the file's float type otherwise), ``float32``, ``bfloat16``
    or ``float16``. ``sha256`` skips hashing the file when the caller already did.

    Raises:
        InputError: gguf not installed, not a GGUF file, truncated, unsupported architecture,
            ``out_dir`` exists (without ``overwrite``).
        RuntimeFailure: transformers failed to build the model from the file.
    """
    src = Path(gguf_path).expanduser()
    if not src.is_file():
        raise InputError(f"GGUF file {src} does not exist", hint="check the path")
    src = src.resolve()
    header = read_gguf_header(src)
    stored = resolve_dtype(dtype, header)
    if header.dequantized and (dtype or "auto").lower() == "auto":
        logger.info(
            "dequantized %s weights are written in %s; pass --dtype float32 to keep fp32",
            header.quantization,
            stored,
        )
    info = GGUFInfo(
        path=str(src),
        sha256=sha256 or file_sha256(src),
        size=src.stat().st_size,
        architecture=header.architecture,
        quantization=header.quantization,
        dequantized=header.dequantized,
        dtype=stored,
    )
    with atomic_output_dir(Path(out_dir), overwrite=overwrite) as tmp:
        _write_checkpoint(src, tmp, stored)
        (tmp / INFO_FILE).write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    return info


def _load_kwargs() -> dict[str, Any]:
    """Ask transformers for a dense model: newer releases can keep GGUF blocks packed."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    try:
        return {"quantization_config": GgufConfig(dequantize=True)}
    except TypeError:  # pragma: no cover - a GgufConfig without the option
        return {}


def _write_checkpoint(src: Path, tmp: Path, stored: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = getattr(torch, stored)
    try:
        with _quiet_legacy_bar():
            loaded = AutoModelForCausalLM.from_pretrained(
                str(src.parent), gguf_file=src.name, dtype=torch.float32, **_load_kwargs()
            )
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    except InputError:
        raise
    except Exception as exc:
        raise RuntimeFailure(
            f"transformers could not load {src.name} as a causal language model "
            f"({type(exc).__name__}: {str(exc)[:300]})",
            hint="check that the file is a decoder-only LLM; otherwise convert the original "
            "Hugging Face checkpoint instead",
        ) from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = loaded.state_dict()
    del loaded
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeFailure(
            f"the weights read from {src.name} do not match the model transformers builds for it "
            f"(missing: {list(missing)[:5]}, unexpected: {list(unexpected)[:5]})",
            hint="upgrade transformers and gguf, or convert the original checkpoint instead",
        )
    del state
    model.tie_weights()
    model = model.to(target)
    if hasattr(model.config, "dtype"):
        model.config.dtype = target
    save_kwargs: dict[str, Any] = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        save_kwargs["safe_serialization"] = True
    model.save_pretrained(str(tmp), **save_kwargs)
    _complete_side_files(src.parent, tmp, tokenizer)
    tokenizer.save_pretrained(str(tmp))
    if not list(tmp.glob("*.safetensors")):  # pragma: no cover - transformers wrote pickle
        raise RuntimeFailure(
            f"saving the converted {src.name} produced no safetensors file",
            hint="upgrade transformers",
        )
    for f in tmp.iterdir():  # some writers leave 0600 files; the cache is meant to be shared
        if f.is_file():
            f.chmod(0o644)


@contextlib.contextmanager
def _quiet_legacy_bar() -> Iterator[None]:
    """Silence the legacy GGUF reader's own tqdm bar when transformers' bars are turned off.

    That reader draws it with ``tqdm`` directly, so ``disable_progress_bar()`` (which the CLI
    calls) does not reach it.
    """
    try:
        import transformers.modeling_gguf_pytorch_utils as legacy
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        yield
        return
    original = getattr(legacy, "tqdm", None)
    if original is None or hf_logging.is_progress_bar_enabled():
        yield
        return
    legacy.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        legacy.tqdm = original


def _complete_side_files(src_dir: Path, tmp: Path, tokenizer: Any) -> None:
    """Use a chat template or generation config that sits beside the GGUF when the file lacks them."""
    if not getattr(tokenizer, "chat_template", None):
        jinja = src_dir / "chat_template.jinja"
        tok_cfg = src_dir / "tokenizer_config.json"
        template = None
        if jinja.is_file():
            template = jinja.read_text()
        elif tok_cfg.is_file():
            try:
                template = json.loads(tok_cfg.read_text()).get("chat_template")
            except (ValueError, AttributeError):
                template = None
        if isinstance(template, str) and template:
            tokenizer.chat_template = template
    side_gen = src_dir / "generation_config.json"
    if side_gen.is_file():
        try:
            json.loads(side_gen.read_text())
        except ValueError:
            return
        shutil.copyfile(side_gen, tmp / "generation_config.json")


def read_info(converted: Path) -> GGUFInfo | None:
    """The :class:`GGUFInfo` recorded in a converted directory, or None."""
    try:
        data = json.loads((converted / INFO_FILE).read_text())
        return GGUFInfo(**data)
    except (OSError, ValueError, TypeError):
        return None
