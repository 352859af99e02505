"""``--device-map`` / ``--max-memory``: where each module of a model too big for one device goes.

- ``parse_device_map``: 'auto', 'balanced', 'balanced_low_0', 'sequential', a JSON file, an inline
  JSON object, or a dict (Python API), mapping module names to devices ("cuda:0", 0, "cpu").
- ``parse_max_memory``: "cuda:0=20GiB,cpu=64GiB" → ``{0: "20GiB", "cpu": "64GiB"}``.
- ``resolve_device_map``: the per-module map accelerate chooses, computed on an empty-weights model
  built from the config (no weights read), exactly as ``from_pretrained`` computes it.
- ``dispatch``: places a model loaded on the CPU by the map with accelerate, with the CPU as the
  main device, so modules mapped to "cpu" *compute* on the CPU. (Left to itself, accelerate treats
  "cpu" entries next to a GPU as offloaded weights, kept on the meta device and streamed to the
  GPU at each forward: no gradient can reach those, and a patch needs gradients on every target.)

Targets must end on a compute device: "disk" entries are refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .errors import InputError

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
DeviceMap = dict[str, Any]


def parse_device_map(value: str | DeviceMap | None) -> str | DeviceMap | None:
    """A strategy name or a module → device dict (validated), from the option's value."""
    if value is None or isinstance(value, dict):
        return _check_map(value, "device map") if isinstance(value, dict) else None
    text = value.strip()
    if text in STRATEGIES:
        return text
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"--device-map is not valid JSON: {exc}") from None
        return _check_map(data, "--device-map")
    path = Path(text).expanduser()
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read the device map {path}: {exc}") from None
        return _check_map(data, str(path))
    raise InputError(
        f"--device-map {value!r} is neither a strategy nor a JSON file",
        hint=f"use one of {', '.join(STRATEGIES)}, a .json file or an inline JSON object",
    )


def _check_map(data: Any, origin: str) -> DeviceMap:
    if not isinstance(data, dict) or not data:
        raise InputError(f"{origin}: a device map must be a non-empty JSON object")
    out: DeviceMap = {}
    for name, dev in data.items():
        out[str(name)] = _device_value(dev, origin)
    if "disk" in out.values():
        raise InputError(
            f"{origin}: modules mapped to 'disk' cannot be optimized (their weights never live "
            "on a compute device)",
            hint="map them to 'cpu' or a GPU, or raise --max-memory",
        )
    return out


def _device_value(dev: Any, origin: str) -> Any:
    if isinstance(dev, bool):
        raise InputError(f"{origin}: {dev!r} is not a device")
    if isinstance(dev, int):
        return dev
    if isinstance(dev, str):
        d = dev.strip()
        if d in ("cpu", "disk", "mps") or re.fullmatch(r"(cuda|xpu|npu)(:\d+)?", d):
            return d
        if d.isdigit():
            return int(d)
    raise InputError(f"{origin}: {dev!r} is not a device (use 'cuda:0', 0, 'cpu')")


def parse_max_memory(value: str | dict | None) -> dict[int | str, str] | None:
    """``"cuda:0=20GiB,cpu=64GiB"`` (commas or spaces) → accelerate's ``max_memory`` dict."""
    if value is None or isinstance(value, dict):
        return value
    out: dict[int | str, str] = {}
    for item in re.split(r"[,\s]+", value.strip()):
        if not item:
            continue
        dev, sep, size = item.partition("=")
        if not sep or not size:
            raise InputError(
                f"--max-memory entry {item!r} is not DEVICE=SIZE",
                hint="e.g. --max-memory cuda:0=20GiB,cpu=64GiB",
            )
        dev = dev.strip()
        m = re.fullmatch(r"(?:cuda:)?(\d+)", dev)
        key: int | str = int(m.group(1)) if m else dev
        if not m and dev not in ("cpu", "disk", "mps"):
            raise InputError(f"--max-memory: unknown device {dev!r}", hint="use cuda:N or cpu")
        if not re.fullmatch(r"\d+(\.\d+)?\s*([KMGT]i?B)?", size.strip(), flags=re.I):
            raise InputError(f"--max-memory: {size!r} is not a size (e.g. 20GiB)")
        out[key] = size.strip()
    if not out:
        raise InputError("--max-memory is empty", hint="e.g. --max-memory cuda:0=20GiB,cpu=64GiB")
    return out


def empty_model(path: Path | str, dtype: torch.dtype, trust_remote_code: bool = False) -> Any:
    """The model's module tree with no weights allocated (meta device), in ``dtype``."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, trust_remote_code=trust_remote_code
        )
    return model


def resolve_device_map(
    path: Path | str,
    dtype: torch.dtype,
    device_map: str | DeviceMap,
    max_memory: str | dict | None = None,
    *,
    trust_remote_code: bool = False,
    model: Any = None,
) -> DeviceMap:
    """The module → device map for ``device_map`` (a strategy is resolved by accelerate)."""
    spec = parse_device_map(device_map)
    if isinstance(spec, dict):
        return spec
    mm = parse_max_memory(max_memory)
    model = model if model is not None else empty_model(path, dtype, trust_remote_code)
    try:
        from transformers.integrations.accelerate import _get_device_map

        resolved = _get_device_map(model, spec, mm, None)
    except ImportError:  # pragma: no cover - older transformers: accelerate directly
        from accelerate import infer_auto_device_map

        resolved = infer_auto_device_map(
            model,
            max_memory=mm,
            no_split_module_classes=model._no_split_modules,
            dtype=dtype,
        )
    return _check_map(dict(resolved), f"--device-map {spec}")


def keeps_cpu_modules(device_map: DeviceMap) -> bool:
    """Whether the map has CPU entries (dispatched here, not by from_pretrained)."""
    return any(str(v) == "cpu" for v in device_map.values())


def dispatch(model: Any, device_map: DeviceMap) -> Any:
    """Place ``model`` (loaded on the CPU) by ``device_map``; "cpu" modules compute on the CPU."""
    import logging

    from accelerate import dispatch_model

    # accelerate warns that "cpu" modules are offloaded to the meta device: with the CPU as the
    # main device they are not (checked by modeling.require_targets), so the warning misleads.
    quiet = logging.getLogger("accelerate.big_modeling")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        dispatch_model(model, device_map=device_map, main_device="cpu", force_hooks=True)
    except (ValueError, KeyError, AttributeError) as exc:
        raise InputError(
            f"accelerate refused the device map: {exc}",
            hint="the map must name modules that cover every parameter of the model",
        ) from None
    finally:
        quiet.setLevel(level)
    model.hf_device_map = dict(device_map)
    return model


def device_label(dev: Any) -> str:
    """'cuda:0' for 0, otherwise the device's own name."""
    return f"cuda:{dev}" if isinstance(dev, int) else str(dev)


def placement_summary(params: dict[str, torch.nn.Parameter]) -> dict[str, dict[str, int]]:
    """Per device: how many target tensors and parameters live there (bookkeeping for reports)."""
    out: dict[str, dict[str, int]] = {}
    for p in params.values():
        row = out.setdefault(str(p.device), {"tensors": 0, "params": 0})
        row["tensors"] += 1
        row["params"] += p.numel()
    return out


def layer_placement(device_map: DeviceMap) -> dict[str, list[str]]:
    """Device → module names, in map order (for printing the plan)."""
    out: dict[str, list[str]] = {}
    for name, dev in device_map.items():
        out.setdefault(device_label(dev), []).append(name or "(whole model)")
    return out
