"""What the ``panacea-patch eval`` command and ``patch --eval`` need beyond the library calls:
parsing option strings into :class:`EvalConfig` values, and rendering results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from panacea_patch.errors import InputError
from panacea_patch.evaluation.batching import BatchSize, check_batch_size
from panacea_patch.evaluation.config import EvalConfig
from panacea_patch.evaluation.report import EvalReport, compare_reports, format_report_table

__all__ = [
    "eval_config_from_options",
    "format_report_table",
    "parse_batch_size",
    "parse_label_map",
    "read_phrase_file",
    "report_json",
]

_NONE_WORDS = ("none", "off", "")


def parse_batch_size(value: str | int) -> BatchSize:
    """``"auto"`` or a positive integer, from a command-line string."""
    if value == "auto":
        return "auto"
    if isinstance(value, int):
        return check_batch_size(value)
    try:
        number = int(value)
    except ValueError:
        raise InputError(
            f"--batch-size {value!r} is not valid", hint="pass a positive integer or 'auto'"
        ) from None
    return check_batch_size(number)


def parse_label_map(value: str | None) -> dict[str, str] | None:
    """``LABEL_0=safe,LABEL_1=unsafe`` or a JSON object, into a label mapping."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"--judge-labels is not valid JSON ({exc.msg})",
                hint='write {"LABEL_1": "unsafe"} or LABEL_1=unsafe,LABEL_0=safe',
            ) from None
        if not isinstance(loaded, dict):
            raise InputError(
                "--judge-labels must be a JSON object", hint='write {"LABEL_1": "unsafe"}'
            )
        return {str(k): str(v) for k, v in loaded.items()}
    mapping = {}
    for item in text.split(","):
        label, sep, target = item.partition("=")
        if not sep or not label.strip():
            raise InputError(
                f"--judge-labels item {item.strip()!r} is not LABEL=safe|unsafe",
                hint="write LABEL_1=unsafe,LABEL_0=safe",
            )
        mapping[label.strip()] = target.strip()
    return mapping


def read_phrase_file(path: str | Path) -> tuple[str, ...]:
    """Refusal phrases from a text file: one per line; blank lines and ``#`` comments skipped."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"phrase file {p} does not exist", hint="check the path")
    lines = p.read_text(encoding="utf-8").splitlines()
    phrases = tuple(s for s in (line.strip() for line in lines) if s and not s.startswith("#"))
    if not phrases:
        raise InputError(f"phrase file {p} holds no phrases", hint="write one phrase per line")
    return phrases


def _source_or_none(value: str | None) -> str | None:
    # "--benign none" disables a set; the library takes None for that.
    if value is None or value.strip().lower() in _NONE_WORDS:
        return None
    return value


def eval_config_from_options(**options: Any) -> EvalConfig:
    """An :class:`EvalConfig` from CLI option values; ``None`` values keep the defaults.

    String forms are converted: ``batch_size`` ("auto"/"8"), ``judge_labels`` (see
    :func:`parse_label_map`), ``refusal_phrases_file`` / ``refusal_start_phrases_file`` (paths
    read with :func:`read_phrase_file`), and ``harmful``/``benign`` equal to ``none``.
    """
    values = {k: v for k, v in options.items() if v is not None}
    for key in ("harmful", "benign"):
        if key in values:
            values[key] = _source_or_none(values[key])
    if "batch_size" in values:
        values["batch_size"] = parse_batch_size(values["batch_size"])
    if isinstance(values.get("judge_labels"), str):
        values["judge_labels"] = parse_label_map(values["judge_labels"])
    for key in ("refusal_phrases", "refusal_start_phrases"):
        path = values.pop(f"{key}_file", None)
        if path is not None:
            values[key] = read_phrase_file(path)
    known = set(EvalConfig.help())
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(
            f"unknown evaluation option(s) {', '.join(unknown)}",
            hint=f"valid options are: {', '.join(sorted(known))}",
        )
    return EvalConfig(**values)


def report_json(
    report: EvalReport, before: EvalReport | None = None, *, indent: int | None = 2
) -> str:
    """One JSON object: the report's figures, or ``{"before", "after", "delta"}`` with ``before``."""
    data = report.to_dict() if before is None else compare_reports(before, report)
    return json.dumps(data, indent=indent, ensure_ascii=False)
