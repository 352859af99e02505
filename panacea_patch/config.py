"""``PatchConfig``: every setting of a patch run, each with a description.

This one frozen dataclass is the source of truth: the CLI builds its options from it, config files
(TOML or YAML) are validated against it, and ``examples/patch.toml`` mirrors it (a test keeps them
in sync).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from .errors import InputError

Method = Literal["panacea", "closed-form", "random"]
Budget = Literal["global", "layer"]
Rounding = Literal["nearest", "stochastic"]
Device = Literal["auto", "cpu", "cuda"]
ComputeDtype = Literal["auto", "float32", "bfloat16", "float16"]


def opt(default: Any, help: str, *, group: str = "general", flag: str | None = None) -> Any:
    """A config field with its description (shown by ``--help`` and in examples/patch.toml)."""
    meta = {"help": help, "group": group}
    if flag:
        meta["flag"] = flag
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class PatchConfig:
    """All options of ``panacea-patch patch`` / ``panacea_patch.patch``."""

    # --- method -------------------------------------------------------------------------------
    method: Method = opt(
        "panacea",
        "Perturbation: 'panacea' (optimized, default), 'closed-form' (rho*grad h/|grad h|, "
        "the paper's epsilon*) or 'random' (Gaussian baseline).",
        group="method",
    )
    rho: float | None = opt(
        None,
        "Absolute L2 budget of the perturbation over the target set. Default: derived from "
        "--rho-rel.",
        group="method",
    )
    rho_rel: float | None = opt(
        None,
        "Budget relative to the target weights' L2 norm (rho = rho_rel * |w|). Carries between "
        "models better than an absolute rho. Default when neither rho nor max_kl is set: 0.1 for "
        "full models, 0.12 for LoRA adapters (calibrated on the demo organism, docs/RESULTS.md).",
        group="method",
    )
    max_kl: float | None = opt(
        None,
        "Choose rho automatically: the largest rho whose mean benign KL stays <= this value.",
        group="method",
    )
    budget: Budget = opt(
        "global",
        "'global': |eps| <= rho over the whole target set; 'layer': each tensor gets a share "
        "of rho proportional to its weight norm.",
        group="method",
    )
    steps: int = opt(60, "Projected gradient-ascent steps for --method panacea.", group="method")
    step_size: float = opt(
        0.5,
        "Initial step size as a fraction of rho (cosine-decayed to 10% over the steps).",
        group="method",
    )
    alpha: float = opt(
        10.0,
        "Weight of the refusal loss r in J = min(h, h_max) - alpha*r - beta*u.",
        group="method",
    )
    beta: float = opt(10.0, "Weight of the benign utility-drift term u in J.", group="method")
    h_max: float = opt(
        5.0, "Cap on the harmful loss h (no gradient above it), as the paper.", group="method"
    )
    seed: int = opt(0, "Random seed: the same seed gives byte-identical output on CPU.")
    targets: str | None = opt(
        None,
        "Regex over tensor names selecting the target set. Default: 2-D weights of the "
        "repeated decoder blocks (LoRA A/B tensors for an adapter).",
    )
    # --- data ---------------------------------------------------------------------------------
    harmful: str = opt(
        "builtin:harmful",
        "Harmful (prompt, harmful response) pairs: a .jsonl/.json/.csv/.parquet file, "
        "hf:org/name[:config][@split], or builtin:harmful.",
        group="data",
    )
    refusal: str | None = opt(
        "builtin:refusal",
        "Refusal (harmful prompt, refusal) pairs; 'none' disables the refusal term.",
        group="data",
    )
    benign: str | None = opt(
        "builtin:benign",
        "Benign prompts (responses optional) for the utility term; 'none' disables it.",
        group="data",
    )
    benign_is_task: bool = opt(
        False,
        "Use cross-entropy on the benign responses (your task data) instead of KL drift.",
        group="data",
    )
    prompt_field: str | None = opt(None, "Field name of the prompt in data files.", group="data")
    response_field: str | None = opt(
        None, "Field name of the response in data files.", group="data"
    )
    max_length: int = opt(256, "Maximum tokens per example (prompt + response).", group="data")
    batch_size: int = opt(8, "Examples per batch for each data role.", group="data")
    max_examples: int | None = opt(
        None,
        "Use at most this many examples per role, for optimization and --eval (default: all).",
        group="data",
    )
    # --- compute ------------------------------------------------------------------------------
    device: Device = opt(
        "auto", "Compute device: auto (cuda if available), cpu or cuda.", group="compute"
    )
    device_map: str | None = opt(
        None,
        "'auto' spreads a model too big for one GPU over devices (accelerate).",
        group="compute",
    )
    dtype: ComputeDtype = opt(
        "auto",
        "Compute dtype for forward/backward: auto = float32 on CPU, bfloat16 on CUDA.",
        group="compute",
    )
    gradient_checkpointing: bool = opt(
        False, "Trade compute for activation memory.", group="compute"
    )
    # --- checkpoint ---------------------------------------------------------------------------
    revision: str | None = opt(
        None, "Hub revision (branch, tag or commit) of the source.", group="checkpoint"
    )
    base_model: str | None = opt(
        None,
        "Base model of a PEFT adapter source (default: the adapter config's "
        "base_model_name_or_path).",
        group="checkpoint",
    )
    merge_adapter: bool = opt(
        False,
        "For an adapter source: merge it into the base, perturb the dense weights, write a full "
        "model.",
        group="checkpoint",
    )
    rounding: Rounding = opt(
        "nearest",
        "Rounding of w + eps to the stored dtype: round-to-nearest-even or stochastic.",
        group="checkpoint",
    )
    save_delta: bool = opt(
        False,
        "Also write eps itself to panacea_delta.safetensors (lets you revert).",
        group="checkpoint",
    )
    allow_pickle: bool = opt(
        False, "Accept pickle (*.bin) checkpoints. Only for sources you trust.", group="checkpoint"
    )
    trust_remote_code: bool = opt(
        False,
        "Allow model code from the checkpoint to run. Only for sources you trust.",
        group="checkpoint",
    )
    overwrite: bool = opt(False, "Replace an existing output directory.", group="checkpoint")
    # --- evaluation and publishing --------------------------------------------------------------
    eval: bool = opt(False, "Evaluate safety and utility before and after the patch.", group="eval")
    judge: str = opt("keyword", "Safety judge: keyword, model:<id>, generative:<id>.", group="eval")
    max_new_tokens: int = opt(48, "Tokens generated per prompt during evaluation.", group="eval")
    push_to_hub: str | None = opt(None, "Push the output to this Hub repo (org/name).", group="hub")
    private: bool = opt(False, "Create the Hub repo as private.", group="hub")
    hub_revision: str | None = opt(None, "Branch to push to (created if missing).", group="hub")
    create_pr: bool = opt(
        False, "Open a pull request instead of pushing to the branch.", group="hub"
    )
    commit_message: str | None = opt(None, "Commit message for the push.", group="hub")

    def __post_init__(self) -> None:
        for name in ("rho", "rho_rel", "max_kl"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                flag = "--" + name.replace("_", "-")
                raise InputError(
                    f"{flag} must be a finite number > 0, got {v}", hint=f"pass e.g. {flag} 0.01"
                )
        if self.steps < 0 or self.batch_size < 1 or self.max_length < 8:
            raise InputError("--steps must be >= 0, --batch-size >= 1 and --max-length >= 8")
        if sum(v is not None for v in (self.rho, self.rho_rel, self.max_kl)) > 1:
            raise InputError(
                "--rho, --rho-rel and --max-kl are alternatives", hint="pass only one of them"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def fields_with_types(cls) -> list[tuple[dataclasses.Field, Any]]:
        hints = get_type_hints(cls)
        return [(f, hints[f.name]) for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, values: dict[str, Any], *, origin: str = "config") -> PatchConfig:
        """Build from a dict (config file), rejecting unknown keys with the valid ones named."""
        known = {f.name for f in dataclasses.fields(cls)}
        clean = {k.replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(clean) - known)
        if unknown:
            raise InputError(
                f"{origin}: unknown option(s) {', '.join(unknown)}",
                hint=f"valid options are: {', '.join(sorted(known))}",
            )
        for f, tp in cls.fields_with_types():
            if f.name in clean:
                clean[f.name] = _coerce(clean[f.name], tp, f.name, origin)
        return cls(**clean)


def _coerce(value: Any, tp: Any, name: str, origin: str) -> Any:
    """Light type checking for config-file values, with messages naming the option."""
    args = [a for a in get_args(tp) if a is not type(None)]
    if value is None:
        return None
    if get_origin(tp) is Literal or (args and get_origin(args[0]) is Literal):
        choices = get_args(tp) if get_origin(tp) is Literal else get_args(args[0])
        if value not in choices:
            raise InputError(
                f"{origin}: {name} must be one of {', '.join(map(str, choices))}, got {value!r}"
            )
        return value
    base = args[0] if args else tp
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is bool and isinstance(value, bool):
        return value
    if base is str and isinstance(value, str):
        return value
    raise InputError(f"{origin}: {name} must be a {base.__name__}, got {value!r}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML config file into a dict (validated later by ``from_mapping``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file {p} does not exist", hint="check the --config path")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise InputError(f"config file {p} must end in .toml, .yaml or .yml")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot parse config file {p}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {p} must hold a table of options")
    # Allow the options to sit under a [patch] table as well as at top level.
    return data.get("patch", data) if isinstance(data.get("patch"), dict) else data


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def example_toml() -> str:
    """The text of ``examples/patch.toml``: every option, its default and its description.

    Options whose default is None are written commented out (TOML has no null).
    """
    lines = [
        "# panacea-patch configuration: every option of `panacea-patch patch`, with its default.",
        "# Use with: panacea-patch patch SOURCE --out DIR --config examples/patch.toml",
        "# Command-line flags override values from this file. YAML files with the same keys work too.",
        "",
    ]
    group = None
    for f in dataclasses.fields(PatchConfig):
        if f.metadata["group"] != group:
            group = f.metadata["group"]
            lines += ["", f"# --- {group} " + "-" * (60 - len(group))]
        for chunk in _wrap(f.metadata["help"], 94):
            lines.append(f"# {chunk}")
        if f.default is None:
            lines.append(f"# {f.name} =   (not set by default)")
        else:
            lines.append(f"{f.name} = {_toml_value(f.default)}")
    return "\n".join(lines).strip() + "\n"


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]
