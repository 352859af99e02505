"""Read and validate a GGUF file's header: architecture, quantization and native dtype.

Only the header and tensor table are read (no tensor data): :func:`read_gguf_header` checks the
magic, that every tensor lies inside the file, and that transformers reads the architecture;
:func:`resolve_dtype` turns ``dtype="auto"`` into the stored dtype. Part of
:mod:`panacea_patch.gguf`, which re-exports these names.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .errors import InputError

GGUF_SUFFIX = ".gguf"
INSTALL_HINT = "pip install 'panacea-patch[gguf]'"

DTYPES = ("float32", "bfloat16", "float16")
_FLOAT_TYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float32"}
# llama.cpp renames a few architectures; transformers' legacy reader maps them back the same way.
_ARCH_ALIASES = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
    "t5encoder": "t5",
    "command-r": "cohere",
}


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF file says about itself, read without touching the tensor data."""

    architecture: str
    quantization: str
    dequantized: bool
    native_dtype: str  # what dtype="auto" resolves to
    tensor_count: int
    tensor_types: dict[str, int]


def require_gguf() -> ModuleType:
    """The ``gguf`` package, or an :class:`InputError` that says how to install it."""
    try:
        import gguf
    except ImportError:
        raise InputError(
            "reading GGUF files needs the gguf package, which is not installed",
            hint=INSTALL_HINT,
        ) from None
    if not hasattr(gguf, "GGUFReader"):
        raise InputError("the installed gguf package is too old (no GGUFReader)", hint=INSTALL_HINT)
    return gguf


def is_gguf_file(path: Path) -> bool:
    return path.suffix.lower() == GGUF_SUFFIX


def find_gguf_in_dir(directory: Path, gguf_file: str | None = None) -> Path | None:
    """The one ``.gguf`` file of ``directory`` (or the one named ``gguf_file``); None if it has none.

    Raises InputError when ``gguf_file`` is not there, or when there are several and none is named.
    """
    found = sorted(f for f in directory.iterdir() if f.is_file() and is_gguf_file(f))
    if gguf_file is not None:
        target = directory / gguf_file
        if not target.is_file():
            names = ", ".join(f.name for f in found) or "none"
            raise InputError(
                f"{directory} has no file {gguf_file!r} (.gguf files there: {names})",
                hint="pass --gguf-file with one of the names listed",
            )
        return target
    if len(found) > 1:
        raise InputError(
            f"{directory} holds {len(found)} .gguf files: {', '.join(f.name for f in found)}",
            hint="choose one with --gguf-file NAME, or pass the file's path as the source",
        )
    return found[0] if found else None


def supported_architectures() -> frozenset[str]:
    """GGUF architectures the installed transformers can read."""
    names: set[str] = set()
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        names.update(GGUF_SUPPORTED_ARCHITECTURES)
    except ImportError:  # pragma: no cover - very old or very new transformers
        pass
    try:  # transformers >= 5.x: a second, faster reader for some architectures
        from transformers.integrations.gguf import GGUF_CONFIG_ARCHS

        names.update(GGUF_CONFIG_ARCHS)
    except ImportError:
        pass
    # Sections of the same mapping that are not architectures.
    return frozenset(names - {"general", "tokenizer", "tokenizer_config"})


def _check_architecture(path: Path, arch: str) -> None:
    supported = supported_architectures()
    if not supported:
        return  # cannot tell; transformers will say so when loading
    if (
        arch in supported
        or _ARCH_ALIASES.get(arch) in supported
        or arch.replace("-", "_") in supported
    ):
        return
    raise InputError(
        f"{path.name} holds a {arch!r} model, which transformers cannot read from GGUF "
        f"(it reads: {', '.join(sorted(supported))})",
        hint="convert the original Hugging Face checkpoint instead, or upgrade transformers "
        "if a newer release reads this architecture",
    )


def _corrupt(path: Path, why: str) -> InputError:
    return InputError(
        f"{path} is not a readable GGUF file ({why})",
        hint="download the file again (it may be truncated or corrupt), and check it is a GGUF model",
    )


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Validate ``path`` as a GGUF file and read its architecture and quantization.

    Checks the magic, that every tensor's data lies inside the file (a truncated download), and
    that transformers reads the architecture. Raises InputError otherwise.
    """
    path = Path(path)
    gguf = require_gguf()
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise _corrupt(path, f"bad magic {magic!r}, expected b'GGUF'")
    try:
        reader = gguf.GGUFReader(str(path))
        fields = reader.fields
        tensors = list(reader.tensors)
    except Exception as exc:  # the reader raises ValueError, IndexError, struct errors...
        raise _corrupt(path, f"{type(exc).__name__}: {str(exc)[:200]}") from None
    for t in tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size or t.data.nbytes != t.n_bytes:
            raise _corrupt(
                path, f"tensor {t.name!r} ends at byte {end} but the file has {size} bytes"
            )
    arch_field = fields.get("general.architecture")
    if arch_field is None:
        raise _corrupt(path, "no general.architecture key")
    arch = str(arch_field.contents())
    _check_architecture(path, arch)
    if not tensors:
        raise _corrupt(path, "it holds no tensors")

    type_names = [t.tensor_type.name for t in tensors]
    dequantized = any(name not in _FLOAT_TYPES for name in type_names)
    quantization = _quantization_name(gguf, fields, tensors)
    if dequantized:
        native = "bfloat16"
    else:
        native = _FLOAT_TYPES.get(quantization) or _predominant_float(tensors)
    return GGUFHeader(
        architecture=arch,
        quantization=quantization,
        dequantized=dequantized,
        native_dtype=native,
        tensor_count=len(tensors),
        tensor_types=dict(Counter(type_names)),
    )


def _quantization_name(gguf: ModuleType, fields: dict, tensors: list) -> str:
    """``general.file_type`` as llama.cpp names it (``MOSTLY_Q4_1`` -> ``Q4_1``), else the most
    common type of the 2-D tensors, by element count."""
    ft = fields.get("general.file_type")
    if ft is not None:
        try:
            name = gguf.LlamaFileType(int(ft.contents())).name
        except (ValueError, TypeError, AttributeError):
            name = ""
        if name and name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    weights: Counter[str] = Counter()
    for t in tensors:
        if len(t.shape) >= 2:
            weights[t.tensor_type.name] += int(t.n_elements)
    if not weights:
        weights.update(t.tensor_type.name for t in tensors)
    return weights.most_common(1)[0][0]


def _predominant_float(tensors: list) -> str:
    counts: Counter[str] = Counter()
    for t in tensors:
        counts[_FLOAT_TYPES.get(t.tensor_type.name, "float32")] += int(t.n_elements)
    return counts.most_common(1)[0][0]


def resolve_dtype(dtype: str | None, header: GGUFHeader) -> str:
    """The stored dtype for ``dtype`` (``auto`` or a name) given the file."""
    dtype = (dtype or "auto").lower()
    if dtype == "auto":
        return header.native_dtype
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
    dtype = aliases.get(dtype, dtype)
    if dtype not in DTYPES:
        raise InputError(
            f"unknown dtype {dtype!r} for a GGUF conversion",
            hint=f"use one of auto, {', '.join(DTYPES)}",
        )
    return dtype
