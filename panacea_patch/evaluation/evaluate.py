"""``evaluate``: safety and utility of one model, as an :class:`EvalReport`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from panacea_patch.data import Role, load_pairs
from panacea_patch.errors import InputError
from panacea_patch.evaluation.config import EvalConfig
from panacea_patch.evaluation.generation import generate_answers, model_device
from panacea_patch.evaluation.judges import Judge, JudgeOptions, make_judge
from panacea_patch.evaluation.report import EvalReport, SampleRecord
from panacea_patch.evaluation.scoring import get_scorer, parse_number
from panacea_patch.evaluation.utility import kl_to_reference, perplexity
from panacea_patch.evaluation.verdicts import RefusalMatcher, classify_answer


def _unwrap(model: Any, tokenizer: Any = None) -> tuple[Any, Any]:
    # Accept a LoadedModel (modeling.load_model) as well as a bare model + tokenizer.
    if hasattr(model, "model") and hasattr(model, "tokenizer") and not hasattr(model, "generate"):
        return model.model, tokenizer or model.tokenizer
    return model, tokenizer


@contextlib.contextmanager
def _eval_mode(*models: Any) -> Iterator[None]:
    # Dropout off for the run; each model's own mode is restored afterwards.
    live = [m for m in models if m is not None]
    modes = [m.training for m in live]
    for m in live:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(live, modes, strict=True):
            m.train(mode)


class _Clock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)


def evaluate(
    model: Any,
    tokenizer: Any = None,
    config: EvalConfig | None = None,
    *,
    reference: Any = None,
    judge: Judge | None = None,
) -> EvalReport:
    """Measure safety (harmful prompts) and utility (benign prompts, task file) of ``model``.

    ``model`` is a transformers/PEFT causal LM (or a ``LoadedModel``, whose tokenizer is then
    used when ``tokenizer`` is None). ``reference`` (same tokenizer) enables the KL figure.
    ``judge`` overrides ``config.judge`` with a ready judge object. Data and the judge are loaded
    before any generation, so bad input fails fast. Deterministic for a fixed config.
    """
    config = config or EvalConfig()
    model, tokenizer = _unwrap(model, tokenizer)
    reference = _unwrap(reference)[0] if reference is not None else None
    if tokenizer is None:
        raise InputError("evaluate needs the model's tokenizer", hint="pass tokenizer=")
    start = time.perf_counter()
    data = _load_data(config)
    matcher = RefusalMatcher(config.refusal_phrases, config.refusal_start_phrases)
    judge = judge or make_judge(config.judge, _judge_options(config, matcher, model))
    report = EvalReport(judge=judge.name, config=config.to_dict())
    clock = _Clock()
    torch.manual_seed(config.seed)
    with _eval_mode(model, reference):
        run = _Run(model, tokenizer, config, matcher, report, clock)
        if data.harmful:
            run.safety(data.harmful, judge)
        if data.benign:
            run.benign(data.benign, reference)
        if data.task:
            run.task(data.task)
    report.timings = clock.timings
    report.seconds = round(time.perf_counter() - start, 3)
    return report


@dataclass(frozen=True)
class _Data:
    harmful: list[Any]
    benign: list[Any]
    task: list[Any]


def _load_data(config: EvalConfig) -> _Data:
    harmful = _load(config, config.harmful, "harmful", config.harmful_split)
    benign = _load(config, config.benign, "benign", config.benign_split)
    task = _load_task(config, config.task) if config.task else []
    if not (harmful or benign or task):
        raise InputError(
            "nothing to evaluate: no harmful, benign or task set",
            hint="pass at least one of harmful, benign or task",
        )
    return _Data(harmful, benign, task)


def _load(config: EvalConfig, src: str | None, role: Role, split: Any) -> list[Any]:
    if not src:
        return []
    # Evaluation needs prompts only, so files load under the "benign" rules (response optional):
    # a prompt-only harmful file is fine. Built-in sets must be named for their own role.
    load_role: Role = role if src.startswith("builtin:") else "benign"
    try:
        return load_pairs(
            src,
            role=load_role,
            split=split,
            prompt_field=config.prompt_field,
            response_field=config.response_field,
            limit=config.max_examples,
        )
    except InputError as exc:
        message = exc.message.replace(f"no {load_role} rows", f"no {role} prompts")
        raise InputError(message, hint=exc.hint) from exc


def _load_task(config: EvalConfig, src: str) -> list[Any]:
    # Every row counts: a task file is not split into halves.
    rows = load_pairs(
        src, role="benign", split=None, response_field="answer", limit=config.max_examples
    )
    for row in rows:
        if row.response is None:
            raise InputError(
                f"{row.where}: the task row has an empty answer",
                hint="fill in the answer, or remove the row",
            )
        if config.scorer == "number" and parse_number(row.response) is None:
            raise InputError(
                f"{row.where}: answer {row.response!r} is not a number",
                hint="use the number scorer only with numeric answers",
            )
    return rows


def _judge_options(config: EvalConfig, matcher: RefusalMatcher, model: Any) -> JudgeOptions:
    return JudgeOptions(
        labels=config.judge_labels,
        input_mode=config.judge_input,
        template=config.judge_template,
        matcher=matcher,
        max_repeats=config.max_repeats,
        device=model_device(model),
        allow_pickle=config.allow_pickle,
    )


def _pct(count: int, total: int) -> float | None:
    return 100.0 * count / total if total else None


class _Run:
    """The phases of one evaluation, filling ``report`` as they go."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: EvalConfig,
        matcher: RefusalMatcher,
        report: EvalReport,
        clock: _Clock,
    ) -> None:
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.matcher, self.report, self.clock = matcher, report, clock

    def _answers(self, prompts: Sequence[str], desc: str) -> list[str]:
        return generate_answers(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=self.config.max_new_tokens,
            batch_size=self.config.batch_size,
            progress=self.config.progress,
            desc=desc,
        )

    def _record(self, set_name: Any, index: int, pair: Any, output: str) -> SampleRecord:
        verdict = classify_answer(output, self.matcher, max_repeats=self.config.max_repeats)
        return SampleRecord(
            set=set_name,
            index=index,
            prompt=pair.prompt,
            output=output,
            verdict=verdict,
            refused=self.matcher.is_refusal(output),
            incoherent=verdict == "incoherent",
            source=pair.source,
            line=pair.line,
        )

    def safety(self, pairs: list[Any], judge: Judge) -> None:
        prompts = [p.prompt for p in pairs]
        with self.clock.phase("generate_harmful"):
            answers = self._answers(prompts, "harmful prompts")
        with self.clock.phase("judge"):
            results = judge.judge(
                prompts, answers, batch_size=self.config.batch_size, progress=self.config.progress
            )
        records = [
            self._record("harmful", i, p, a)
            for i, (p, a) in enumerate(zip(pairs, answers, strict=True))
        ]
        for record, result in zip(records, results, strict=True):
            record.harmful = result.harmful
            record.judge_output = result.raw
        self.report.samples.extend(records)
        self._safety_figures(records)

    def _safety_figures(self, records: list[SampleRecord]) -> None:
        n = len(records)
        by = {
            v: sum(r.verdict == v for r in records) for v in ("refusal", "compliance", "incoherent")
        }
        judged = [r.harmful for r in records if r.harmful is not None]
        rep = self.report
        rep.n_harmful = n
        rep.refusal_rate = _pct(by["refusal"], n)
        rep.compliance_rate = _pct(by["compliance"], n)
        rep.incoherence_rate = _pct(by["incoherent"], n)
        rep.harmful_score = _pct(sum(judged), len(judged))
        rep.counts.update(
            {
                "harmful_refusal": by["refusal"],
                "harmful_compliance": by["compliance"],
                "harmful_incoherent": by["incoherent"],
                "harmful_judged_harmful": sum(judged),
                "judge_unparsed": n - len(judged),
            }
        )

    def benign(self, pairs: list[Any], reference: Any) -> None:
        with self.clock.phase("generate_benign"):
            answers = self._answers([p.prompt for p in pairs], "benign prompts")
        records = [
            self._record("benign", i, p, a)
            for i, (p, a) in enumerate(zip(pairs, answers, strict=True))
        ]
        rep = self.report
        rep.n_benign = len(records)
        refused = sum(r.verdict == "refusal" for r in records)
        incoherent = sum(r.incoherent for r in records)
        rep.over_refusal = _pct(refused, len(records))
        rep.benign_incoherence_rate = _pct(incoherent, len(records))
        rep.counts.update({"benign_refused": refused, "benign_incoherent": incoherent})
        if reference is not None:
            self._kl(pairs, records, reference)
        with_response = [p for p in pairs if p.response is not None]
        if self.config.perplexity and with_response:
            self._perplexity(with_response)
        rep.samples.extend(records)

    def _kl(self, pairs: list[Any], records: list[SampleRecord], reference: Any) -> None:
        with self.clock.phase("kl"):
            result = kl_to_reference(
                self.model,
                reference,
                self.tokenizer,
                [p.prompt for p in pairs],
                max_new_tokens=self.config.max_new_tokens,
                batch_size=self.config.batch_size,
                progress=self.config.progress,
            )
        self.report.kl, self.report.kl_tokens = result.mean, result.tokens
        for record, value in zip(records, result.per_prompt, strict=True):
            record.kl = value

    def _perplexity(self, pairs: list[Any]) -> None:
        with self.clock.phase("perplexity"):
            result = perplexity(
                self.model,
                self.tokenizer,
                pairs,
                max_length=self.config.max_length,
                batch_size=self.config.batch_size,
                progress=self.config.progress,
            )
        self.report.perplexity, self.report.ppl_tokens = result.perplexity, result.tokens

    def task(self, rows: list[Any]) -> None:
        scorer = get_scorer(self.config.scorer)
        with self.clock.phase("generate_task"):
            answers = self._answers([r.prompt for r in rows], "task prompts")
        records = []
        for i, (row, output) in enumerate(zip(rows, answers, strict=True)):
            record = self._record("task", i, row, output)
            record.expected = row.response
            record.correct = scorer(output, row.response)
            records.append(record)
        correct = sum(bool(r.correct) for r in records)
        self.report.n_task = len(records)
        self.report.scorer = self.config.scorer
        self.report.task_accuracy = _pct(correct, len(records))
        self.report.counts["task_correct"] = correct
        self.report.samples.extend(records)
