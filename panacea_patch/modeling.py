"""Load a resolved checkpoint as a live model for computing losses, gradients and generations."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import InputError, RuntimeFailure
from .source import ResolvedSource, adapter_base, resolve_source

log = logging.getLogger("panacea_patch")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A model ready for compute, with the map from live parameters to checkpoint tensors."""

    model: Any
    tokenizer: Any
    source: ResolvedSource
    param_to_tensor: dict[str, str]
    device: torch.device
    dtype: torch.dtype
    merged: bool = False

    def parameters_by_tensor(self) -> dict[str, torch.nn.Parameter]:
        """Checkpoint tensor name → live parameter."""
        params = dict(self.model.named_parameters())
        return {t: params[p] for p, t in self.param_to_tensor.items()}


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "--device cuda was asked for but no CUDA device is available", hint="use --device cpu"
        )
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    # bf16 matmuls are ~25x slower than fp32 on CPU (DESIGN.md section 5).
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def load_model(
    src: ResolvedSource | str | Path,
    *,
    device: str = "auto",
    dtype: str = "auto",
    merge_adapter: bool = False,
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
    token: str | None = None,
    max_memory: str | dict | None = None,
) -> LoadedModel:
    """Load ``src`` (full model or PEFT adapter on its base) in the compute dtype.

    ``device_map`` / ``max_memory``: see :mod:`panacea_patch.placement`; the resolved map is kept
    in ``model.hf_device_map``.
    """
    if not isinstance(src, ResolvedSource):
        src = resolve_source(src, token=token)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    if dev.type == "cpu" or device_map is not None:
        from .hostmem import prefer_mmap

        prefer_mmap()  # freed weights and activations leave RSS (hostmem.py)
    if device_map is not None:
        device_map = _DeviceMapSpec(device_map, max_memory)  # type: ignore[assignment]
    if src.kind == "adapter":
        return _load_adapter(src, dev, dt, merge_adapter, trust_remote_code, device_map, token)
    model = _from_pretrained(src.path, dt, trust_remote_code, device_map, src.is_pickle)
    model = _place(model, dev, device_map)
    tokenizer = load_tokenizer(src.path, trust_remote_code)
    mapping = _map_params(model, src, strip=None)
    return LoadedModel(model, tokenizer, src, mapping, dev, dt)


@dataclass
class _DeviceMapSpec:
    """The user's --device-map and --max-memory, resolved against the model when it loads."""

    device_map: str | dict
    max_memory: str | dict | None


def _from_pretrained(
    path: Path | str, dt: torch.dtype, trust_remote_code: bool, device_map: Any, pickle: bool
) -> Any:
    from transformers import AutoModelForCausalLM

    from . import placement

    resolved: dict | None = None
    if isinstance(device_map, _DeviceMapSpec):
        resolved = placement.resolve_device_map(
            path,
            dt,
            device_map.device_map,
            device_map.max_memory,
            trust_remote_code=trust_remote_code,
        )
        log.info("device map: %s", placement.layer_placement(resolved))
    # Maps with CPU entries are dispatched below, so those modules compute on the CPU.
    dispatch_here = resolved is not None and placement.keeps_cpu_modules(resolved)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=dt,
            trust_remote_code=trust_remote_code,
            device_map=None if dispatch_here else resolved,
            use_safetensors=not pickle,
        )
        if resolved is not None and dispatch_here:
            model = placement.dispatch(model, resolved)
        return model
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise InputError(
                f"{path} needs custom model code to load",
                hint="review the code, then pass --trust-remote-code",
            ) from None
        raise RuntimeFailure(f"transformers could not load {path}: {exc}") from None


def _place(model: Any, dev: torch.device, device_map: str | None) -> Any:
    model.eval()
    if device_map is None:
        model.to(dev)
    return model


def load_tokenizer(path: Path | str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"no usable tokenizer in {path} ({exc})",
            hint="save the tokenizer next to the weights (tokenizer.save_pretrained)",
        ) from None


def _resolve_base(src: ResolvedSource, token: str | None) -> ResolvedSource:
    return resolve_source(adapter_base(src), token=token)


def _load_adapter(
    src: ResolvedSource,
    dev: torch.device,
    dt: torch.dtype,
    merge: bool,
    trust_remote_code: bool,
    device_map: Any,
    token: str | None,
) -> LoadedModel:
    from peft import PeftModel

    base_src = _resolve_base(src, token)
    base = _from_pretrained(base_src.path, dt, trust_remote_code, device_map, base_src.is_pickle)
    model = PeftModel.from_pretrained(base, src.path, is_trainable=True)
    has_tok = any((src.path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = load_tokenizer(src.path if has_tok else base_src.path, trust_remote_code)
    if merge:
        model = _place(model.merge_and_unload(), dev, device_map)
        mapping = _map_params(model, base_src, strip=None)
        return LoadedModel(model, tokenizer, base_src, mapping, dev, dt, merged=True)
    model = _place(model, dev, device_map)
    mapping = _map_params(model, src, strip=".default")
    return LoadedModel(model, tokenizer, src, mapping, dev, dt)


def _map_params(model: Any, src: ResolvedSource, strip: str | None) -> dict[str, str]:
    """Live parameter name → checkpoint tensor name, for every parameter stored in the checkpoint.

    PEFT inserts the adapter name (``.default``) into parameter names; transformers keeps
    checkpoint names for the architectures we target. Tensors that match nothing are simply not
    trainable targets; ``require_targets`` reports any target left unmapped.
    """
    from .checkpoint import ShardReader

    with ShardReader(src) as reader:
        stored = set(reader.names())
    mapping = {}
    for pname, _ in model.named_parameters():
        name = pname.replace(strip, "") if strip else pname
        if name in stored:
            mapping[pname] = name
    return mapping


def require_targets(lm: LoadedModel, target_names: list[str]) -> dict[str, torch.nn.Parameter]:
    """The live parameters of the target tensors; fails clearly if any cannot be found."""
    by_tensor = lm.parameters_by_tensor()
    missing = [t for t in target_names if t not in by_tensor]
    if missing:
        raise RuntimeFailure(
            f"{len(missing)} target tensor(s) have no matching parameter in the loaded model, "
            f"e.g. {missing[0]!r}",
            hint="pass a --targets regex naming tensors the model exposes as parameters",
        )
    offloaded = [t for t in target_names if by_tensor[t].device.type == "meta"]
    if offloaded:
        raise InputError(
            f"{len(offloaded)} target tensor(s) are offloaded by the device map (no weights on a "
            f"compute device), e.g. {offloaded[0]!r}; the optimized methods need gradients there",
            hint="give the devices more room with --max-memory, or map those modules to 'cpu'",
        )
    return {t: by_tensor[t] for t in target_names}


def freeze_except(lm: LoadedModel, targets: dict[str, torch.nn.Parameter]) -> None:
    """Only target parameters get gradients: no memory is spent on the rest."""
    keep = {id(p) for p in targets.values()}
    for p in lm.model.parameters():
        p.requires_grad_(id(p) in keep)
