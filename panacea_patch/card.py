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

import logging
from pathlib import Path

from huggingface_hub import ModelCard

from .card_body import (
    _LIMITATIONS,
    PAPER_URL,
    _code,
    _evaluation,
    _guard,
    _intro,
    _layers,
    _reproduce,
    _revert,
    _source_ref,
    _summary,
    equivalent_command,
)
from .card_meta import (
    MARKER,
    METRIC_LABELS,
    README,
    SOURCE_MARKER,
    _card_data,
    default_model_name,
    is_generated_card,
    recover_source_card,
    split_card,
)
from .hub_settings import scrub_secrets

__all__ = [
    "MARKER",
    "METRIC_LABELS",
    "PAPER_URL",
    "README",
    "SOURCE_MARKER",
    "build_model_card",
    "default_model_name",
    "equivalent_command",
    "is_generated_card",
    "readme_is_replaceable",
    "recover_source_card",
    "split_card",
    "write_model_card",
]

logger = logging.getLogger(__name__)


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
        _guard(record.get("guard")),
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
