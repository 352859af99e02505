"""``PatchConfig``: every setting of a patch run, each with a description.

This one frozen dataclass is the source of truth: the CLI builds its options from it, config files
(TOML or YAML) are validated against it, and ``examples/patch.toml`` mirrors it (a test keeps them
in sync).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import options
from .errors import InputError
from .options import ConfigFields, Device, opt, shared

Method = Literal["panacea", "closed-form", "random"]
Budget = Literal["global", "layer"]
Rounding = Literal["nearest", "stochastic"]
ComputeDtype = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class PatchConfig(ConfigFields):
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
        "Budget relative to the target weights' L2 norm (rho = rho_rel * |w|). Unset, with "
        "neither rho nor max_kl: the scale-aware default of README 'How large a perturbation' "
        "(0.12 x |A,B| for LoRA adapters, 0.6 x |w - w_base| with --base-model, else a 3-nat "
        "rise of h capped at 0.1 x |w|).",
        group="method",
    )
    max_kl: float | None = opt(
        None,
        "Choose rho automatically: the largest rho whose mean benign KL stays <= this value.",
        group="method",
    )
    budget: Budget | None = opt(
        None,
        "'global': |eps| <= rho over the whole target set; 'layer': each tensor gets a share "
        "of rho proportional to its weight norm. Default: 'global', unless the closed-form "
        "start in one ball would move some tensor by more than its own norm (it would "
        "replace that tensor, not perturb it: seen on a LoRA adapter's B matrices); then "
        "'layer' (README, 'How large a perturbation').",
        group="method",
    )
    steps: int | None = opt(
        None,
        "Projected gradient-ascent steps for --method panacea. Default: 60, or 30 when the "
        "default budget comes from the loss-rise rule (its start is mild; README, 'How large "
        "a perturbation').",
        group="method",
    )
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
    answer_kl_weight: float | None = opt(
        None,
        "Extra weight, inside u, on the benign KL at the benign answers' own positions "
        "(every response token), where a model decides whether to answer, refuse or stop; 0 "
        "uses the whole-sequence KL alone. Default: 4, or 0 when the default budget is a share "
        "of a full model's known fine-tuning delta (--base-model, --merge-adapter); README, "
        "'What it does'.",
        group="method",
    )
    h_max: float = shared("h_max")
    response_tokens: int | None = opt(
        16,
        "Score h and r on the first N response tokens only (a refusal is decided in its "
        "first words; the utility term keeps whole responses); 0 scores whole responses.",
        group="method",
    )
    patience: int | None = opt(
        0,
        "Stop the ascent early once the smoothed objective J has not improved for this many "
        "steps; 0 (default) always runs all the steps.",
        group="method",
    )
    max_damage_kl: float | None = opt(
        1.0,
        "Guard: before writing, measure the patched model's KL per token on held-out benign "
        "prompts; above this the run stops with exit 1 and writes nothing (see --force). "
        "0 or unset disables the guard.",
        group="method",
    )
    min_refusal_drop: float = opt(
        0.1,
        "Guard: the patch must lower the refusal loss on held-out refusals by at least this "
        "share of its unpatched value (0.1 = 10%), or it would ship the unsafe model under a "
        "patched name; otherwise the run stops with exit 1 and writes nothing (see --force). A "
        "default budget is first refit once at half its rho. 0 disables this check.",
        group="method",
    )
    force: bool = opt(
        False,
        "Write the output even when the damage guard (--max-damage-kl, --min-refusal-drop) trips.",
        group="method",
    )
    seed: int = opt(0, "Random seed: the same seed gives byte-identical output on CPU.")
    targets: str | None = opt(
        None,
        "Regex over tensor names selecting the target set. Default: 2-D weights of the "
        "repeated decoder blocks (LoRA A/B tensors for an adapter).",
    )
    # --- data ---------------------------------------------------------------------------------
    harmful: str = shared("harmful")
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
    prompt_field: str | None = shared("prompt_field")
    response_field: str | None = shared("response_field")
    max_length: int = shared("max_length")
    batch_size: int = opt(8, "Examples per batch for each data role.", group="data")
    max_examples: int | None = opt(
        None,
        "Use at most this many examples per role, for optimization and --eval (default: all).",
        group="data",
    )
    # --- compute ------------------------------------------------------------------------------
    device: Device = shared("device")
    device_map: str | None = opt(
        None,
        "Spread a model too big for one device over several (accelerate): 'auto', 'balanced', "
        "'sequential', or a JSON file / inline JSON object mapping module names to devices "
        '(e.g. {"model.layers.0": "cuda:0", "lm_head": "cpu"}). Every target must land on '
        "a compute device (not 'disk').",
        group="compute",
    )
    max_memory: str | None = opt(
        None,
        "Memory per device for --device-map, e.g. 'cuda:0=20GiB,cuda:1=20GiB,cpu=64GiB'.",
        group="compute",
    )
    offload_w0: bool = opt(
        False,
        "Keep the original target weights w0 in (pinned) host memory and stream them to the "
        "device per tensor at each projection (CUDA; saves w0's bytes on the GPU but keeps a "
        "persistent live copy there, see docs/PERFORMANCE.md).",
        group="compute",
    )
    dtype: ComputeDtype = opt(
        "auto",
        "Compute dtype for forward/backward: auto = float32 on CPU, bfloat16 on CUDA.",
        group="compute",
    )
    gradient_checkpointing: bool = shared("gradient_checkpointing")
    # --- checkpoint ---------------------------------------------------------------------------
    revision: str | None = shared("revision")
    gguf_file: str | None = opt(
        None,
        "GGUF file to read from a Hub repo or a directory with several .gguf files. A GGUF source "
        "is dequantized into a cached checkpoint stored in --dtype (auto: bfloat16 for a "
        "quantized file, else the file's float type).",
        group="checkpoint",
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
    allow_pickle: bool = shared("allow_pickle")
    trust_remote_code: bool = shared("trust_remote_code")
    overwrite: bool = shared("overwrite")
    # --- evaluation and publishing --------------------------------------------------------------
    eval: bool = shared("eval")
    judge: str = shared("judge")
    max_new_tokens: int = shared("max_new_tokens")
    push_to_hub: str | None = shared("push_to_hub")
    private: bool = shared("private")
    hub_revision: str | None = shared("hub_revision")
    create_pr: bool = shared("create_pr")
    commit_message: str | None = shared("commit_message")
    # --- output -------------------------------------------------------------------------------
    progress_interval: float | None = shared("progress_interval")

    def __post_init__(self) -> None:
        for name in ("rho", "rho_rel", "max_kl"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                flag = "--" + name.replace("_", "-")
                raise InputError(
                    f"{flag} must be a finite number > 0, got {v}", hint=f"pass e.g. {flag} 0.01"
                )
        if (self.steps or 0) < 0 or self.batch_size < 1 or self.max_length < 8:
            raise InputError("--steps must be >= 0, --batch-size >= 1 and --max-length >= 8")
        for name in ("response_tokens", "patience"):
            if (getattr(self, name) or 0) < 0:
                flag = "--" + name.replace("_", "-")
                raise InputError(f"{flag} must be >= 0", hint=f"pass {flag} 0 to turn it off")
        if self.max_damage_kl is not None and not self.max_damage_kl >= 0:
            raise InputError("--max-damage-kl must be >= 0", hint="pass 0 to turn the guard off")
        if not 0 <= self.min_refusal_drop < 1:
            raise InputError(
                f"--min-refusal-drop must be in [0, 1), got {self.min_refusal_drop}",
                hint="pass e.g. 0.1 (10%), or 0 to turn this check off",
            )
        if sum(v is not None for v in (self.rho, self.rho_rel, self.max_kl)) > 1:
            raise InputError(
                "--rho, --rho-rel and --max-kl are alternatives", hint="pass only one of them"
            )


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML config file (options at top level or under ``[patch]``)."""
    return options.load_config_file(path, table="patch")


def example_toml() -> str:
    """The text of ``examples/patch.toml``: every option, its default and its description."""
    return options.example_toml(PatchConfig, "patch", "SOURCE")
