"""The card's front matter: reading a card's YAML, and the metadata and eval results we write.

A generated card starts its body with :data:`MARKER`, which is how the writer tells our README
(replaceable) from one the user wrote (kept unless asked); :data:`SOURCE_MARKER` precedes the
source card's text inside ours.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import Any, TypeGuard

from huggingface_hub import EvalResult, ModelCardData

from .hub_settings import parse_hub_id

logger = logging.getLogger("panacea_patch.card")

MARKER = "<!-- panacea-patch:model-card -->"
SOURCE_MARKER = "<!-- panacea-patch:source-card -->"
"""Precedes the source card's text in ours, so a later refresh can recover it without the source."""
README = "README.md"

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


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
