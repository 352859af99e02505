"""The plan ``patch --dry-run`` prints: memory per device, passes and tokens, device placement.

Nothing is loaded but the tokenizer (to count the alignment batches' tokens when the data is local
or built in) and, for a ``--device-map`` strategy, an empty-weights model (to ask accelerate for
its placement). The memory model:

- **live weights**: every parameter in the compute dtype, except nn.Linear targets, which are
  rebuilt from w₀ + ε while their module runs (``methods/live.py``): for those only the largest
  one, twice (the rebuilt weight and its gradient), is counted. ``--offload-w0`` keeps them
  persistent and moves w₀ to the host;
- **w₀**: the targets in their stored dtype; **ε**: the targets in fp32;
- **activations**: the largest graph one backward pass keeps, in proportion to the target layers
  on each device; ``plan_estimate`` holds the per-token model and counts the passes and tokens;
- **gradients** (panacea): a step's terms run backward one after another, so the targets'
  gradients accumulate over the step in the compute dtype before they are folded into ε.

The random method loads no model: it streams one tensor at a time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .budget import RISE_STEPS, planned_steps
from .config import PatchConfig
from .plan_estimate import (
    _SIZE,
    C_HIDDEN,
    C_INTER,
    SLACK,
    Graph,
    _dims,
    _estimated_graphs,
    activation_bytes,
    compute_device,
    compute_dtype,
    count_passes,
    text_config,
)
from .safetensors_io import TensorInfo
from .source import ResolvedSource
from .targets import Target


@dataclass
class DeviceMemory:
    """Estimated bytes on one device."""

    live_weights: int = 0
    w0: int = 0
    eps: int = 0
    activations: int = 0
    # The benign reference's top-k log-probabilities and ids (objectives.BenignReference).
    reference: int = 0
    # An ascent step's gradient, summed over its terms' separate backward passes.
    gradients: int = 0

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def _load_data(cfg: PatchConfig, src: ResolvedSource) -> Any:
    """The alignment batches, when that is cheap (built-in or local data); else None."""
    sources = [cfg.harmful, cfg.refusal, cfg.benign]
    if any(isinstance(s, str) and s.startswith("hf:") for s in sources):
        return None
    from .methods.perturb import AlignmentData
    from .modeling import load_tokenizer

    path = src.path
    if src.kind == "adapter" and not (path / "tokenizer_config.json").exists():
        from .source import adapter_base

        base = adapter_base(src)
        path = base if isinstance(base, str) else path
    tokenizer = load_tokenizer(path, cfg.trust_remote_code)
    return AlignmentData.load(tokenizer, cfg)


def _module_device(name: str, device_map: Mapping[str, Any], default: str) -> str:
    from .placement import device_label

    best, dev = -1, default
    for module, d in device_map.items():
        covers = module == "" or name == module or name.startswith(module + ".")
        if covers and len(module) > best:
            best, dev = len(module), device_label(d)
    return dev


def build_plan(
    cfg: PatchConfig,
    src: ResolvedSource,
    targets: list[Target],
    infos: Mapping[str, TensorInfo],
) -> dict[str, Any]:
    """The plan dict (``PatchResult.plan``); see the module docstring for the memory model."""
    from . import placement
    from .methods import live

    device = compute_device(cfg.device)
    dtype = compute_dtype(cfg, device)
    size = _SIZE[dtype]
    model_bytes = sum(i.nbytes for i in infos.values())
    plan: dict[str, Any] = {
        "device": device,
        "compute_dtype": str(dtype).removeprefix("torch."),
        "method": cfg.method,
        "model_bytes": model_bytes,
        "notes": [],
    }
    if cfg.method == "random":
        largest = max((i.nbytes for i in infos.values()), default=0)
        biggest = max((t.numel for t in targets), default=0)
        mem = DeviceMemory(activations=2 * largest + 4 * biggest)
        plan.update(
            per_device={"cpu" if device == "cpu" else device: mem.to_dict()},
            passes={"forward_backward": 0, "forward": 0, "tokens": 0},
            live_weights="none (the random method streams one tensor at a time)",
        )
        return plan

    on_demand = live.enabled() and not cfg.offload_w0
    plan["live_weights"] = "rebuilt per module" if on_demand else "persistent"
    all_infos = dict(infos)
    if src.kind == "adapter":
        base = _base_infos(src)
        if base is None:
            plan["notes"].append("base model not local: its weights are not counted")
        all_infos.update(base or {})

    device_map: dict[str, Any] | None = None
    if cfg.device_map is not None:
        device_map = placement.resolve_device_map(
            src.path,
            dtype,
            cfg.device_map,
            cfg.max_memory,
            trust_remote_code=cfg.trust_remote_code,
        )
        plan["device_map"] = placement.layer_placement(device_map)

    def where(name: str) -> str:
        if device_map is None:
            return device
        return _module_device(name, device_map, device)

    per: dict[str, DeviceMemory] = {}
    target_names = {t.name for t in targets}
    for name, info in all_infos.items():
        if name in target_names:
            continue
        if info.dtype.is_floating_point:
            per.setdefault(where(name), DeviceMemory()).live_weights += info.numel * size
        else:
            per.setdefault(where(name), DeviceMemory()).live_weights += info.nbytes
    largest: dict[str, int] = {}
    for t in targets:
        dev = where(t.name)
        row = per.setdefault(dev, DeviceMemory())
        w0_dev = "cpu" if cfg.offload_w0 else dev
        per.setdefault(w0_dev, DeviceMemory()).w0 += t.numel * _SIZE.get(t.dtype, 4)
        row.eps += t.numel * 4
        if on_demand:
            largest[dev] = max(largest.get(dev, 0), t.numel)
        else:
            row.live_weights += t.numel * size
    for dev, numel in largest.items():
        per[dev].live_weights += 2 * numel * size  # the rebuilt weight and its gradient
    merged = bool(getattr(cfg, "merge_adapter", False))
    steps = planned_steps(cfg, kind=src.kind, merged=merged) if cfg.method == "panacea" else 0
    if steps > 0:
        for t in targets:
            per.setdefault(where(t.name), DeviceMemory()).gradients += t.numel * size

    dims = _dims(src.config if src.kind == "full" else _base_config(src))
    data = None
    try:
        data = _load_data(cfg, src)
    except Exception as exc:  # counting is best effort: a dry run must not fail on it
        plan["notes"].append(f"alignment data not tokenized ({type(exc).__name__}): {exc}")
    if data is not None:
        counted = count_passes(cfg, data, steps)
        graphs = counted.pop("graphs")
        ref_positions = counted.pop("reference_positions")
        fb = counted["closed_form"]["passes"] + counted.get("ascent", {}).get("passes", 0)
        tokens = counted["closed_form"]["tokens"] + counted.get("ascent", {}).get("tokens", 0)
        plan["passes"] = {
            "forward_backward": fb,
            "forward_backward_tokens": tokens,
            "forward": counted["forward_only"]["passes"],
            "forward_tokens": counted["forward_only"]["tokens"],
            **{k: v for k, v in counted.items() if k != "forward_only"},
        }
        if cfg.max_kl is not None:
            plan["notes"].append(
                "--max-kl runs the optimization up to twice, plus forward-only probes of the "
                "held-out KL"
            )
        if getattr(cfg, "patience", None):
            plan["notes"].append("early stopping (--patience) may run fewer steps")
        if steps and cfg.steps is None:
            rule = "the rise rule's" if steps == RISE_STEPS else "a budget from the weights'"
            plan["notes"].append(f"--steps unset: {steps} steps, {rule} default")
    else:
        graphs = _estimated_graphs(cfg)
        plan["passes"] = {"forward_backward": None, "note": "data not counted (Hub dataset)"}
    if dims is not None and data is not None:
        from .objectives import REFERENCE_TOP_K

        top_k = min(REFERENCE_TOP_K, dims["vocab"])
        per.setdefault(device, DeviceMemory()).reference += ref_positions * top_k * 8
    if dims is not None and graphs:
        act = max(activation_bytes(dims, dtype, g) for g in graphs)
        plan["largest_graph_tokens"] = max(sum(t for t, _, _ in g) for g in graphs)
        _spread_activations(per, act, targets, where, device)
    else:
        plan["notes"].append("activations not estimated (unknown model dimensions)")
    plan["per_device"] = {d: m.to_dict() for d, m in per.items()}
    plan["total_bytes"] = sum(m.total for m in per.values())
    return plan


def _spread_activations(
    per: dict[str, DeviceMemory],
    act: int,
    targets: list[Target],
    where: Any,
    device: str,
) -> None:
    """Activations go where the layers compute: in proportion to the target layers per device."""
    layers: dict[int, str] = {}
    for t in targets:
        if t.layer is not None:
            layers.setdefault(t.layer, where(t.name))
    counts: dict[str, int] = {}
    for dev in layers.values():
        counts[dev] = counts.get(dev, 0) + 1
    if not counts:
        counts = {device: 1}
    total = sum(counts.values())
    for dev, n in counts.items():
        per.setdefault(dev, DeviceMemory()).activations += act * n // total


def _base_source(src: ResolvedSource) -> ResolvedSource | None:
    from pathlib import Path

    from .source import adapter_base, resolve_source

    try:
        base = adapter_base(src)
    except Exception:
        return None
    if not Path(str(base)).is_dir():
        return None
    return resolve_source(str(base))


def _base_infos(src: ResolvedSource) -> dict[str, TensorInfo] | None:
    from .checkpoint import ShardReader

    base = _base_source(src)
    if base is None:
        return None
    with ShardReader(base) as reader:
        return reader.infos()


def _base_config(src: ResolvedSource) -> Mapping:
    base = _base_source(src)
    return base.config if base is not None else {}


def human(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def format_plan(plan: Mapping[str, Any]) -> list[str]:
    """Human-readable lines for ``--dry-run``."""
    lines = [
        f"plan: method={plan['method']} device={plan['device']} "
        f"compute dtype={plan['compute_dtype']} checkpoint={human(plan['model_bytes'])} "
        f"live weights: {plan.get('live_weights', '')}"
    ]
    for dev, mem in plan.get("per_device", {}).items():
        lines.append(
            f"  {dev:<8} live weights {human(mem['live_weights']):>9}  w0 {human(mem['w0']):>9}  "
            f"eps {human(mem['eps']):>9}  activations {human(mem['activations']):>9}  "
            f"gradients {human(mem.get('gradients', 0)):>9}  = {human(mem['total'])}"
        )
    passes = plan.get("passes", {})
    if passes.get("forward_backward") is not None:
        lines.append(
            f"  passes: {passes['forward_backward']} forward+backward "
            f"({passes['forward_backward_tokens']:,} tokens), {passes['forward']} forward only "
            f"({passes['forward_tokens']:,} tokens)"
        )
    for dev, modules in plan.get("device_map", {}).items():
        shown = ", ".join(_compress(modules))
        lines.append(f"  device map {dev}: {shown}")
    lines += [f"  note: {n}" for n in plan.get("notes", [])]
    return lines


def _compress(modules: list[str]) -> list[str]:
    """``model.layers.0 .. model.layers.11`` instead of twelve names."""
    out: list[str] = []
    run: list[tuple[str, int]] = []

    def flush() -> None:
        if run:
            prefix = run[0][0]
            out.append(
                f"{prefix}.{run[0][1]}" if len(run) == 1 else f"{prefix}.{run[0][1]}-{run[-1][1]}"
            )
            run.clear()

    for m in modules:
        match = re.fullmatch(r"(.*)\.(\d+)", m)
        if match and run and run[-1][0] == match[1] and run[-1][1] + 1 == int(match[2]):
            run.append((match[1], int(match[2])))
            continue
        flush()
        if match:
            run.append((match[1], int(match[2])))
        else:
            out.append(m)
    flush()
    return out


__all__ = [
    "C_HIDDEN",
    "C_INTER",
    "SLACK",
    "DeviceMemory",
    "Graph",
    "activation_bytes",
    "build_plan",
    "compute_device",
    "compute_dtype",
    "count_passes",
    "format_plan",
    "human",
    "text_config",
]
