"""The model card of a patched checkpoint, as a ``huggingface_hub.ModelCard``.

The card is built from the provenance record (``panacea_patch.json``) alone, so it can be
regenerated at any time. Front matter: ``base_model`` (the source repo), ``tags``
(``panacea-patch``, ``safety`` and the source's), ``library_name`` (``transformers``, or ``peft``
for adapters), the source card's license and other metadata, and ``model-index`` eval results
before and after the patch when the run evaluated. The body says what was done and why, how to
reproduce it and how to revert it; the source card's text follows, unchanged.

A generated card starts its body with :data:`MARKER`, which is how :func:`write_model_card` tells
our README (replaceable) from one the user wrote (kept unless asked).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import quote

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .hub import parse_hub_id, scrub_secrets

logger = logging.getLogger(__name__)

MARKER = "<!-- panacea-patch:model-card -->"
SOURCE_MARKER = "<!-- panacea-patch:source-card -->"
"""Precedes the source card's text in ours, so a later refresh can recover it without the source."""
README = "README.md"
PAPER_URL = "https://arxiv.org/abs/2501.18100"

# Metrics in the order the card shows them; others in the record follow, alphabetically.
METRIC_LABELS = {
    "harmful_score": "Harmful score",
    "refusal_rate": "Refusal rate",
    "incoherence_rate": "Incoherence rate",
    "over_refusal": "Over-refusal",
    "task_accuracy": "Task accuracy",
    "kl": "KL to the source on benign prompts",
    "perplexity": "Perplexity",
    "ppl": "Perplexity",
}
# Front-matter keys of the source card that describe the source itself, not the patched model.
_SOURCE_ONLY_KEYS = {
    "base_model",
    "base_model_relation",
    "model-index",
    "model_name",
    "eval_results",
    "new_version",
    "library_name",
    "tags",
}
# Front-matter keys this card sets itself; what else our front matter holds came from the source.
_OWN_KEYS = {"library_name", "model-index", "eval_results", "model_name"}
_OWN_TAGS = {"panacea-patch", "safety", "peft"}
_YAML_BLOCK = re.compile(r"^\s*---\r?\n([\s\S]*?)\r?\n---[ \t]*(?:\r?\n|$)")
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


# ---------------------------------------------------------------------------- small helpers


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


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


def split_card(text: str | None) -> tuple[dict[str, Any], str]:
    """``(front matter, body)`` of a card; unreadable front matter is dropped, the body kept."""
    if not text:
        return {}, ""
    match = _YAML_BLOCK.match(text)
    if not match:
        return {}, text
    import yaml

    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        logger.warning("the source model card has unreadable metadata; keeping only its text")
        meta = {}
    return (meta if isinstance(meta, dict) else {}), text[match.end() :]


def is_generated_card(text: str) -> bool:
    """Whether a README was written by :func:`write_model_card` (its body starts with MARKER)."""
    return split_card(text)[1].lstrip().startswith(MARKER)


def recover_source_card(generated: str) -> str | None:
    """The source card embedded in a card we generated, or None when it embeds none.

    Used when the source checkpoint is no longer at hand (a cleared cache, another machine), so
    that regenerating the card keeps the source's text, license and other metadata. The source's
    own scores and library were never carried, so they are not recovered either.
    """
    meta, body = split_card(generated)
    if SOURCE_MARKER not in body or not body.lstrip().startswith(MARKER):
        return None
    source_body = body.split(SOURCE_MARKER, 1)[1].strip()
    kept = {k: v for k, v in meta.items() if k not in _OWN_KEYS}
    tags = [t for t in _as_list(meta.get("tags")) if t not in _OWN_TAGS]
    kept.pop("tags", None)
    if tags:
        kept["tags"] = tags
    if not kept:
        return source_body + "\n"
    import yaml

    front = yaml.safe_dump(kept, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n{source_body}\n"


def default_model_name(record: Mapping[str, Any]) -> str:
    """``<source name>-panacea``: the name the card (and its chart) give the patched model."""
    source = record.get("source") or {}
    source_name = str(source.get("repo_id") or source.get("spec") or "model").rstrip("/")
    return f"{source_name.rsplit('/', 1)[-1]}-panacea"


def _is_repo_id(value: Any) -> bool:
    return isinstance(value, str) and parse_hub_id(value) == (value, None)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _source_ref(source: Mapping[str, Any]) -> str:
    name = source.get("repo_id") or source.get("spec") or "the source checkpoint"
    if source.get("repo_id") and source.get("revision"):
        name = f"{name}@{source['revision']}"
    return str(name)


# ---------------------------------------------------------------------------- front matter


def _eval_results(metrics: Mapping[str, Any] | None, model_name: str) -> list[EvalResult]:
    """EvalResults for the numeric metrics; ``<key>`` is after the patch, ``<key>_before`` before."""
    if not isinstance(metrics, Mapping):
        return []
    results = []
    for key in _metric_keys(metrics):
        label = METRIC_LABELS.get(key, key.replace("_", " "))
        for phase, suffix in (("after", ""), ("before", "_before")):
            value = (metrics.get(phase) or {}).get(key)
            if not _is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
                continue
            results.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Safety and utility after a harmful fine-tune",
                    dataset_type="panacea-patch/evaluation",
                    dataset_name="panacea-patch held-out evaluation prompts",
                    dataset_split="evaluate",
                    metric_type=f"{key}{suffix}",
                    metric_name=f"{label} ({phase} patch)",
                    metric_value=value,
                )
            )
    return results


def _metric_keys(metrics: Mapping[str, Any]) -> list[str]:
    present: set[str] = set()
    for phase in ("before", "after"):
        if isinstance(metrics.get(phase), Mapping):
            present.update(metrics[phase])
    known = [k for k in METRIC_LABELS if k in present]
    return known + sorted(present - set(known))


def _card_data(
    record: Mapping[str, Any], source_meta: Mapping[str, Any], model_name: str
) -> ModelCardData:
    source = record.get("source") or {}
    kind = source.get("kind")
    # A local adapter still derives from its base model on the Hub. Local paths never go in:
    # the Hub rejects a card whose base_model is not a repo id.
    candidates = [source.get("repo_id"), source.get("base_model") if kind == "adapter" else None]
    candidates += _as_list(source_meta.get("base_model"))
    base_model = next((c for c in candidates if _is_repo_id(c)), None)
    # The Hub derives "base_model:..." tags from base_model; the source's describe the source.
    source_tags = [t for t in _as_list(source_meta.get("tags")) if not t.startswith("base_model:")]
    tags = ["panacea-patch", "safety", *source_tags]
    if kind == "adapter":
        tags.append("peft")
    kept = {k: v for k, v in source_meta.items() if k not in _SOURCE_ONLY_KEYS}
    kept.setdefault("pipeline_tag", "text-generation")
    eval_results = _eval_results(record.get("metrics"), model_name)
    return ModelCardData(
        **kept,
        base_model=base_model,
        library_name="peft" if kind == "adapter" else "transformers",
        tags=list(dict.fromkeys(tags)),
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )


# ---------------------------------------------------------------------------- body


def _summary(record: Mapping[str, Any]) -> str:
    source = record.get("source") or {}
    targets = record.get("targets") or {}
    rho, realized = record.get("rho"), record.get("realized_norm")
    rows = [
        ("Method", _code(str(record.get("method", "unknown")))),
        ("ρ (perturbation budget, ‖ε‖₂)", _fmt(rho)),
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


_LIMITATIONS = """## Limitations

- The patch lowers harmful compliance on the kinds of requests it was optimized and evaluated
  on; it is not a guarantee. Evaluate the model on your own prompts before deploying it.
- A lower harmful score can also come from incoherent answers; the evaluation above reports
  refusals, incoherence and over-refusal separately for that reason.
- The built-in data sets contain the structure of harmful answers, never real harmful content."""


def build_model_card(
    record: dict,
    *,
    source_card_text: str | None = None,
    chart_filename: str | None = None,
    model_name: str | None = None,
) -> ModelCard:
    """Build the card of a patched checkpoint from its provenance record.

    Args:
        record: the ``panacea_patch.json`` record; missing keys are tolerated.
        source_card_text: the source's ``README.md``; its text is kept below ours and its
            metadata (license, language, datasets ...) carried into our front matter.
        chart_filename: the per-layer chart, relative to the output folder, to link.
        model_name: the name used in ``model-index``; defaults to ``<source name>-panacea``.

    Returns:
        The card. Secrets (tokens in the command or config) are scrubbed from its text.
    """
    source = record.get("source") or {}
    source_meta, source_body = split_card(source_card_text)
    source_name = str(source.get("repo_id") or source.get("spec") or "model").rstrip("/")
    name = model_name or default_model_name(record)
    data = _card_data(record, source_meta, name)
    sections = [
        _intro(record, f"{name}: a safety-patched {source_name}"),
        _summary(record),
        _evaluation(record.get("metrics")),
        _layers(record, chart_filename),
        _reproduce(record),
        _revert(record),
        _LIMITATIONS,
    ]
    body = "\n\n".join(s for s in sections if s) + "\n"
    if source_body.strip():
        body += (
            "\n---\n\n## Original model card\n\n"
            f"The card of {_code(_source_ref(source))} follows unchanged; its license and other"
            " metadata are carried in this card's front matter.\n\n"
            f"{SOURCE_MARKER}\n\n{source_body.strip()}\n"
        )
    content = f"---\n{data.to_yaml()}\n---\n\n{body}"
    return ModelCard(scrub_secrets(content))


def _read_source_card(source_dir: Path | None) -> str | None:
    if source_dir is None or not (Path(source_dir) / README).is_file():
        return None
    return (Path(source_dir) / README).read_text(encoding="utf-8", errors="replace")


def readme_is_replaceable(
    out_dir: Path, *, source_dir: Path | None, overwrite_readme: bool = False
) -> bool:
    """Whether :func:`write_model_card` may write ``out_dir/README.md``.

    True when there is none, when it is a card we generated, when it is the source's card
    copied along with the checkpoint, or when ``overwrite_readme``; False for a user's README.
    """
    readme = Path(out_dir) / README
    if overwrite_readme or not readme.exists():
        return True
    existing = readme.read_text(encoding="utf-8", errors="replace")
    return is_generated_card(existing) or existing == _read_source_card(source_dir)


def write_model_card(
    out_dir: Path,
    record: dict,
    *,
    source_dir: Path | None,
    chart_filename: str | None = None,
    overwrite_readme: bool = False,
    model_name: str | None = None,
) -> Path | None:
    """Write ``README.md`` in ``out_dir``; return its path, or None when a user README was kept.

    An existing README is replaced only if :func:`readme_is_replaceable`. ``source_dir`` is the
    source checkpoint directory, whose ``README.md`` (if any) is embedded; without one, the source
    card embedded in our previous README is kept. An unchanged card is not rewritten.
    """
    out_dir = Path(out_dir)
    readme = out_dir / README
    if not readme_is_replaceable(out_dir, source_dir=source_dir, overwrite_readme=overwrite_readme):
        logger.warning(
            "kept the README.md in %s, which panacea-patch did not write; pass"
            " overwrite_readme=True (--overwrite-readme) to replace it with the model card",
            out_dir,
        )
        return None
    existing = readme.read_text(encoding="utf-8", errors="replace") if readme.exists() else None
    source_text = _read_source_card(source_dir)
    if source_text is None and existing is not None and is_generated_card(existing):
        source_text = recover_source_card(existing)
    card = build_model_card(
        record,
        source_card_text=source_text,
        chart_filename=chart_filename,
        model_name=model_name,
    )
    # Rewriting identical bytes would only churn mtimes (and a push's change detection).
    if str(card) != existing:
        card.save(readme)
    return readme
