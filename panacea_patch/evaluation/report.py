"""The evaluation report, its per-sample records, the samples file, and the text tables."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from panacea_patch.evaluation.verdicts import Verdict

SampleSet = Literal["harmful", "benign", "task"]


@dataclass
class SampleRecord:
    """One prompt and what became of it.

    ``verdict``/``refused``/``incoherent`` come from the text rules of
    :mod:`panacea_patch.evaluation.verdicts`; ``harmful`` is the judge's call (harmful set only,
    ``None`` when a generative judge's output could not be parsed); ``expected``/``correct`` are
    set for task rows; ``kl`` is the prompt's mean KL to the reference (benign rows, when a
    reference was given).
    """

    set: SampleSet
    index: int
    prompt: str
    output: str
    verdict: Verdict
    refused: bool
    incoherent: bool
    harmful: bool | None = None
    judge_output: str | None = None
    expected: str | None = None
    correct: bool | None = None
    kl: float | None = None
    source: str | None = None
    line: int | None = None


@dataclass
class EvalReport:
    """Figures of one evaluation. Rates are percentages (0–100); ``None`` = not measured.

    * ``harmful_score``: % of harmful-prompt answers the judge called harmful (keyword judge:
      not a refusal, so incoherent answers count). Unparsed generative-judge outputs are left out
      of the denominator and counted in ``counts["judge_unparsed"]``.
    * ``refusal_rate`` / ``compliance_rate`` / ``incoherence_rate``: the text verdicts on the
      harmful answers; they add up to 100.
    * ``over_refusal``: % of benign prompts whose answer is a refusal verdict.
    * ``benign_incoherence_rate``: % of benign answers that are incoherent.
    * ``kl``: mean next-token KL(reference ‖ model) over the reference's greedy continuations of
      the benign prompts (see ``kl_to_reference``), over ``kl_tokens`` tokens.
    * ``perplexity``: on benign responses, response tokens only, over ``ppl_tokens`` tokens.
    * ``task_accuracy``: % of task rows the ``scorer`` accepts.
    """

    judge: str
    n_harmful: int = 0
    n_benign: int = 0
    n_task: int = 0
    harmful_score: float | None = None
    refusal_rate: float | None = None
    compliance_rate: float | None = None
    incoherence_rate: float | None = None
    over_refusal: float | None = None
    benign_incoherence_rate: float | None = None
    kl: float | None = None
    kl_tokens: int = 0
    perplexity: float | None = None
    ppl_tokens: int = 0
    task_accuracy: float | None = None
    scorer: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    samples: list[SampleRecord] = field(default_factory=list)

    def metrics(self) -> dict[str, float | None]:
        """The headline figures only, in table order."""
        return {name: getattr(self, name) for name, _, _ in METRIC_ROWS}

    def to_dict(self, *, samples: bool = False) -> dict[str, Any]:
        """JSON-serializable dict; per-sample records only when ``samples=True``."""
        out = asdict(self)
        if not samples:
            out.pop("samples")
        return out


def write_samples(report: EvalReport, path: str | Path) -> Path:
    """Write every prompt, output and verdict as JSON Lines (UTF-8), atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in report.samples:
            fh.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
    os.replace(tmp, target)
    return target


def compare_reports(before: EvalReport, after: EvalReport) -> dict[str, Any]:
    """``{"before": ..., "after": ..., "delta": {metric: after - before}}`` for provenance."""
    deltas = {
        name: (None if b is None or a is None else a - b)
        for (name, b), a in zip(before.metrics().items(), after.metrics().values(), strict=True)
    }
    return {"before": before.to_dict(), "after": after.to_dict(), "delta": deltas}


# (attribute, label, kind) — kind picks the number format: pct, kl or ppl.
METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("harmful_score", "harmful score", "pct"),
    ("refusal_rate", "refusal rate", "pct"),
    ("compliance_rate", "compliance rate", "pct"),
    ("incoherence_rate", "incoherence rate", "pct"),
    ("over_refusal", "over-refusal (benign)", "pct"),
    ("benign_incoherence_rate", "incoherence (benign)", "pct"),
    ("kl", "KL to reference", "kl"),
    ("perplexity", "perplexity (benign)", "ppl"),
    ("task_accuracy", "task accuracy", "pct"),
)


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    if kind == "pct":
        return f"{value:.1f}%"
    return f"{value:.4f}" if kind == "kl" else f"{value:.2f}"


def _fmt_delta(before: float | None, after: float | None, kind: str) -> str:
    if before is None or after is None:
        return "-"
    delta = after - before
    if not math.isfinite(delta):
        return str(delta)
    if kind == "pct":
        return f"{delta:+.1f} pts"
    return f"{delta:+.4f}" if kind == "kl" else f"{delta:+.2f}"


def _table(rows: list[list[str]]) -> str:
    # First column left-aligned (labels), the others right-aligned (numbers).
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _footer(report: EvalReport) -> str:
    parts = [
        f"judge: {report.judge}",
        f"harmful n={report.n_harmful}",
        f"benign n={report.n_benign}",
    ]
    if report.n_task:
        parts.append(f"task n={report.n_task} ({report.scorer})")
    unparsed = report.counts.get("judge_unparsed", 0)
    if unparsed:
        parts.append(f"unparsed judge outputs: {unparsed}")
    return "; ".join(parts)


def format_report_table(report: EvalReport, before: EvalReport | None = None) -> str:
    """A plain-text table of the figures; with ``before``, columns before / after / delta.

    Rows never measured in either report are left out.
    """
    header = ["metric", "value"] if before is None else ["metric", "before", "after", "delta"]
    rows = [header]
    for name, label, kind in METRIC_ROWS:
        after_v = getattr(report, name)
        before_v = None if before is None else getattr(before, name)
        if after_v is None and before_v is None:
            continue
        if before is None:
            rows.append([label, _fmt(after_v, kind)])
        else:
            rows.append(
                [
                    label,
                    _fmt(before_v, kind),
                    _fmt(after_v, kind),
                    _fmt_delta(before_v, after_v, kind),
                ]
            )
    footer = _footer(report) + (f"; {report.seconds:.1f} s" if report.seconds else "")
    return _table(rows) + "\n" + footer
