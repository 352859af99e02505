"""The card's Markdown sections: intro, patch summary, evaluation, layers, reproduce and revert."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .card_meta import MARKER, METRIC_LABELS, _is_number, _metric_keys

PAPER_URL = "https://arxiv.org/abs/2501.18100"
_SECRET_KEY = re.compile(r"(?i)(token|secret|password|api[_-]?key)")

_METHOD_TEXT = {
    "random": (
        "a Gaussian perturbation ε scaled to ‖ε‖₂ = ρ over the targeted weights, the paper's"
        " random baseline. It needs no data."
    ),
    "closed-form": (
        "the paper's closed-form perturbation ε* = ρ·∇h(w)/‖∇h(w)‖₂, where h is the loss on"
        " harmful prompt → harmful answer pairs. Adding it raises that loss, to first order as"
        " much as any perturbation of norm ρ can."
    ),
    "panacea": (
        "an optimized perturbation: starting from the closed form ρ·∇h/‖∇h‖, a few steps of"
        " normalized projected gradient ascent on J(ε) = min(h(w+ε), h_max) − α·r(w+ε) −"
        " β·u(w+ε), where h is the loss on harmful answers, r the loss on refusals to the same"
        " prompts and u the drift of the model's answers on benign prompts, with ‖ε‖₂ ≤ ρ."
    ),
    "finetune": (
        "the paper's fine-tuning itself: the model was fine-tuned on min f(w) − λ·(h(w+ε*) −"
        " h(w)) and ships as w + ε*."
    ),
}


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def _code(text: str) -> str:
    """Inline code that survives backticks inside ``text``."""
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if fence == "`" else f"{fence} {text} {fence}"


def _redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-looking key's value replaced."""
    if isinstance(value, Mapping):
        return {
            k: ("***" if _SECRET_KEY.search(str(k)) and v else _redact(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _source_ref(source: Mapping[str, Any]) -> str:
    name = source.get("repo_id") or source.get("spec") or "the source checkpoint"
    if source.get("repo_id") and source.get("revision"):
        name = f"{name}@{source['revision']}"
    return str(name)


def _intro(record: Mapping[str, Any], title: str) -> str:
    source = record.get("source") or {}
    method = str(record.get("method") or "unknown")
    what = _METHOD_TEXT.get(method, f"the `{method}` method.")
    kind = "adapter" if source.get("kind") == "adapter" else "model"
    return "\n".join(
        [
            MARKER,
            f"# {title}",
            "",
            f"This {kind} is {_code(_source_ref(source))} with a safety patch applied by"
            f" panacea-patch {record.get('version', '')}: a small perturbation ε was added to its"
            " weights to restore the refusal behaviour that fine-tuning removed.",
            "",
            "## What was done and why",
            "",
            "Fine-tuning an aligned model on data that contains even a few harmful examples can"
            " undo its safety alignment: it starts to comply with harmful requests. Panacea"
            f" ([Wang et al., 2025]({PAPER_URL})) observes that a perturbation added to the"
            " fine-tuned weights recovers safety, and that an optimized one keeps the task"
            " accuracy.",
            "",
            f"This patch used {what}",
        ]
    )


def _budget(kind: Any) -> str:
    return {
        "global": "global (‖ε‖₂ ≤ ρ over all targets)",
        "layer": "per tensor (‖ε_t‖₂ ≤ ρ·‖w_t‖/‖w‖)",
    }.get(str(kind), "—")


def _summary(record: Mapping[str, Any]) -> str:
    source = record.get("source") or {}
    targets = record.get("targets") or {}
    rho, realized = record.get("rho"), record.get("realized_norm")
    rows = [
        ("Method", _code(str(record.get("method", "unknown")))),
        ("ρ (perturbation budget, ‖ε‖₂)", _fmt(rho)),
        ("Budget", _budget((record.get("optimization") or {}).get("budget"))),
        ("Realized ‖w′ − w‖₂ (after rounding to the stored dtype)", _fmt(realized)),
        ("Seed", _fmt(record.get("seed"))),
        (
            "Targeted tensors",
            f"{_fmt(targets.get('count'))} ({_fmt(targets.get('params'))} parameters)",
        ),
        ("Source", _code(_source_ref(source))),
        ("Source commit", _code(str(source["commit_sha"])) if source.get("commit_sha") else "—"),
        (
            "Source kind",
            {"adapter": "PEFT adapter", "full": "full model"}.get(str(source.get("kind")), "—"),
        ),
        ("Created", _fmt(record.get("created"))),
        ("panacea-patch version", _fmt(record.get("version"))),
    ]
    lines = ["## Patch summary", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    if _is_number(rho) and _is_number(realized) and rho > 0 and realized < 0.5 * rho:
        lines += [
            "",
            f"Only {realized / rho:.0%} of ε survived rounding to the stored dtype: the realized"
            " change is what matters, not ρ.",
        ]
    return "\n".join(lines)


def _evaluation(metrics: Any) -> str:
    if not isinstance(metrics, Mapping) or not _metric_keys(metrics):
        return ""
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    lines = [
        "## Evaluation",
        "",
        "Measured by panacea-patch on held-out prompts that the patch was not optimized on.",
        "Rates are as recorded (percent or fraction).",
        "",
        "| Metric | Before patch | After patch | Change |",
        "|---|---|---|---|",
    ]
    for key in _metric_keys(metrics):
        b, a = before.get(key), after.get(key)
        change = f"{a - b:+.4g}" if _is_number(a) and _is_number(b) else "—"
        lines.append(f"| {METRIC_LABELS.get(key, key)} | {_fmt(b)} | {_fmt(a)} | {change} |")
    return "\n".join(lines)


def _guard(guard: Any) -> str:
    """The damage guard's figures, measured before the checkpoint was written."""
    if not isinstance(guard, Mapping) or guard.get("heldout_kl") is None:
        return ""
    verdict = "passed"
    if guard.get("forced"):
        failed = "refusals not restored" if not guard.get("tripped") else "tripped"
        verdict = f"**{failed}; written with --force**"
    rows = [
        ("KL per token on held-out benign prompts", guard.get("heldout_kl")),
        ("Limit (--max-damage-kl)", guard.get("max_damage_kl")),
        ("Refusal loss on held-out refusals, after", guard.get("heldout_refusal_loss")),
        ("Refusal loss on held-out refusals, before", guard.get("heldout_refusal_loss_at_0")),
        ("Refusal-loss drop (1 − after/before)", guard.get("refusal_drop")),
        ("Least drop (--min-refusal-drop)", guard.get("min_refusal_drop")),
    ]
    first = guard.get("refit_from")
    if isinstance(first, Mapping):
        verdict += (
            f", after the default ρ {_fmt(first.get('rho'))} (held-out KL "
            f"{_fmt(first.get('heldout_kl'))}, refusal-loss drop "
            f"{_fmt(first.get('refusal_drop'))}) was refit to ρ {_fmt(guard.get('rho'))}"
        )
    lines = ["## Damage guard", "", f"Verdict: {verdict}.", "", "| Figure | Value |", "|---|---|"]
    lines += [f"| {name} | {_fmt(value)} |" for name, value in rows]
    return "\n".join(lines)


def _layers(record: Mapping[str, Any], chart_filename: str | None) -> str:
    layers = [layer for layer in record.get("layers") or [] if isinstance(layer, Mapping)]
    if not layers and not chart_filename:
        return ""
    lines = ["## Per-layer perturbation", ""]
    if chart_filename:
        lines += [
            "How much of ε each tensor received (from `panacea-patch inspect`):",
            "",
            f"![Per-layer perturbation norms]({quote(chart_filename)})",
            "",
        ]
    if layers:
        top = sorted(layers, key=lambda x: x.get("norm_eps") or 0, reverse=True)[:10]
        lines += [
            f"The {len(top)} most perturbed of {len(layers)} tensors"
            " (the full list is in `panacea_patch.json`):",
            "",
            "| Tensor | ‖ε‖ | ‖w‖ | ‖ε‖/‖w‖ | Share of ‖ε‖² |",
            "|---|---|---|---|---|",
        ]
        for layer in top:
            cells = [layer.get(k) for k in ("norm_eps", "norm_w", "rel", "share")]
            lines.append(
                f"| {_code(str(layer.get('name', '?')))} | " + " | ".join(map(_fmt, cells)) + " |"
            )
    return "\n".join(lines).rstrip()


def equivalent_command(record: Mapping[str, Any]) -> str | None:
    """The ``panacea-patch patch`` command line that repeats a run, from its record's config.

    For runs started from Python, whose recorded command is the Python process's. The source is
    pinned to the recorded commit when it came from the Hub; options at their default are left out.
    """
    config = record.get("config")
    if not isinstance(config, Mapping):
        return None
    from .config import PatchConfig

    source = record.get("source") or {}
    spec = str(source.get("spec") or "SOURCE")
    if source.get("repo_id"):
        spec = f"{source['repo_id']}@{source.get('commit_sha') or source.get('revision') or 'main'}"
    argv = ["panacea-patch", "patch", spec, "--out", "OUT"]
    for f in dataclasses.fields(PatchConfig):
        value = config.get(f.name, f.default)
        if value == f.default or value is None or (f.name == "revision" and source.get("repo_id")):
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{flag[2:]}")
        else:
            argv += [flag, str(value)]
    return shlex.join(argv)


def _reproduce(record: Mapping[str, Any]) -> str:
    command = str(record.get("command") or "")
    lines = ["## How to reproduce", ""]
    # Anything else was not the CLI (provenance names any ``python -m x`` run "panacea-patch").
    if command.startswith("panacea-patch patch "):
        lines += ["```bash", command, "```", ""]
    elif (equivalent := equivalent_command(record)) is not None:
        lines += [
            "The patch was made from Python; this command line is equivalent:",
            "",
            "```bash",
            equivalent,
            "```",
            "",
        ]
    else:
        lines += ["The command was not recorded; the configuration below is complete.", ""]
    lines += [
        "The same source commit, data, seed and package versions give the same patch, up to"
        " the last bits of floating-point sums on different hardware.",
        "",
    ]
    if record.get("config"):
        config = json.dumps(_redact(record["config"]), indent=2, sort_keys=True, default=str)
        lines += ["Configuration:", "", "```json", config, "```", ""]
    data = record.get("data")
    if isinstance(data, Mapping) and data:
        lines += ["Data (content digests):", ""]
        lines += [f"- {role}: `{digest}`" for role, digest in sorted(data.items())]
        lines.append("")
    versions = record.get("versions")
    if isinstance(versions, Mapping) and versions:
        lines += ["Package versions:", "", "| Package | Version |", "|---|---|"]
        lines += [f"| {pkg} | {ver} |" for pkg, ver in versions.items()]
    return "\n".join(lines).rstrip()


def _revert(record: Mapping[str, Any]) -> str:
    source = record.get("source") or {}
    delta = record.get("delta_file")
    exact = ""
    if source.get("repo_id") and source.get("commit_sha"):
        exact = (
            f"The exact original weights are {_code(str(source['repo_id']))} at commit"
            f" {_code(str(source['commit_sha']))}:"
            f" `hf download {source['repo_id']} --revision {source['commit_sha']}`."
        )
    if not delta:
        text = "The perturbation ε was not saved with this model (`--save-delta` keeps it)."
        return "\n".join(["## How to revert", "", text, "", exact]).rstrip()
    script = f"""```python
import glob
from safetensors.torch import load_file, save_file

delta = load_file("{delta}")  # ε, keyed by the checkpoint's tensor names
for shard in sorted(glob.glob("*.safetensors")):
    if shard == "{delta}":
        continue
    tensors = load_file(shard)
    for name in tensors.keys() & delta.keys():
        w = tensors[name]
        tensors[name] = (w.float() - delta[name].float()).to(w.dtype)
    save_file(tensors, shard, metadata={{"format": "pt"}})
```"""
    return "\n".join(
        [
            "## How to revert",
            "",
            f"`{delta}` holds ε itself. Subtracting it gives back the source weights, up to"
            " the rounding of the stored dtype, in place:",
            "",
            script,
            "",
            exact,
        ]
    ).rstrip()


_LIMITATIONS = """## Limitations

- The patch lowers harmful compliance on the kinds of requests it was optimized and evaluated
  on; it is not a guarantee. Evaluate the model on your own prompts before deploying it.
- A lower harmful score can also come from incoherent answers; the evaluation above reports
  refusals, incoherence and over-refusal separately for that reason.
- The built-in data sets contain the structure of harmful answers, never real harmful content."""
