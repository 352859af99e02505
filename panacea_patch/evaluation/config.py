"""``EvalConfig``: every setting of an evaluation run, each with a description."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from panacea_patch.errors import InputError
from panacea_patch.evaluation.batching import BatchSize, check_batch_size
from panacea_patch.evaluation.scoring import SCORERS

Scorer = Literal["exact", "contains", "number", "choice"]
JudgeInput = Literal["pair", "answer"]


def opt(default: Any, help: str, *, group: str = "eval") -> Any:
    """A config field with its description (for ``--help`` and the docs)."""
    return field(default=default, metadata={"help": help, "group": group})


@dataclass(frozen=True)
class EvalConfig:
    """All options of ``panacea-patch eval`` / :func:`panacea_patch.evaluation.evaluate`."""

    # --- data ---------------------------------------------------------------------------------
    harmful: str | None = opt(
        "builtin:harmful",
        "Harmful prompts for the safety figures: a .jsonl/.json/.csv/.parquet file, "
        "hf:org/name[:config][@split], or builtin:harmful. None skips the safety figures.",
        group="data",
    )
    harmful_split: str | None = opt(
        "evaluate",
        "Half of the harmful set to use: 'evaluate' (default), 'optimize', or None for every "
        "row. Built-in sets split by their split column, other sources by a hash of the prompt: "
        "the 'evaluate' half is the one a patch never optimizes on.",
        group="data",
    )
    benign: str | None = opt(
        "builtin:benign",
        "Benign prompts (responses optional) for over-refusal, KL and perplexity. None skips them.",
        group="data",
    )
    benign_split: str | None = opt(
        "evaluate",
        "Half of the benign set to use: 'evaluate' (default), 'optimize', or None for every row.",
        group="data",
    )
    prompt_field: str | None = opt(None, "Field name of the prompt in data files.", group="data")
    response_field: str | None = opt(
        None, "Field name of the response in data files.", group="data"
    )
    max_examples: int | None = opt(
        None, "Evaluate at most the first N prompts of each set (default: all).", group="data"
    )
    task: str | None = opt(
        None,
        "Task file with fields 'prompt' and 'answer' for task accuracy (default: none).",
        group="data",
    )
    scorer: Scorer = opt(
        "contains",
        "Task scorer: exact, contains, number (last number equals the answer) or choice "
        "(first standalone letter A-E, or the choice text).",
        group="data",
    )
    # --- judging --------------------------------------------------------------------------------
    judge: str = opt(
        "keyword",
        "Safety judge: keyword (refusal phrases), model:<id-or-path> (sequence classifier) or "
        "generative:<id-or-path> (Llama-Guard-style LM).",
        group="judge",
    )
    judge_labels: Mapping[str, str] | None = opt(
        None,
        "For model: judges, map each classifier label to safe/unsafe, e.g. "
        "{'LABEL_0': 'safe', 'LABEL_1': 'unsafe'}. Labels named safe/unsafe/toxic... need none.",
        group="judge",
    )
    judge_input: JudgeInput = opt(
        "pair",
        "What a model: judge reads: the (prompt, answer) text pair, or the answer alone.",
        group="judge",
    )
    judge_template: str | None = opt(
        None,
        "Prompt template of a generative: judge, with {prompt} and {answer} placeholders "
        "(default: the judge's chat template).",
        group="judge",
    )
    refusal_phrases: tuple[str, ...] | None = opt(
        None,
        "Phrases that mark a refusal anywhere in an answer (default: the built-in English list).",
        group="judge",
    )
    refusal_start_phrases: tuple[str, ...] | None = opt(
        None,
        "Phrases that mark a refusal only at the start of an answer (default: built-in list).",
        group="judge",
    )
    max_repeats: int = opt(
        3,
        "An answer repeating a word (or 2-3 word phrase) more than this many times in a row "
        "is incoherent.",
        group="judge",
    )
    allow_pickle: bool = opt(
        False, "Accept pickle (*.bin) judge checkpoints. Only for judges you trust.", group="judge"
    )
    # --- generation and compute -----------------------------------------------------------------
    max_new_tokens: int = opt(
        48, "Tokens generated per prompt (greedy), also the length of the KL continuations."
    )
    batch_size: BatchSize = opt(
        "auto", "Prompts per batch, or 'auto': start at 64 and halve on out-of-memory."
    )
    max_length: int = opt(512, "Maximum tokens per benign example for perplexity.")
    perplexity: bool = opt(True, "Compute perplexity when benign rows have responses.")
    seed: int = opt(0, "Random seed (decoding is greedy; this pins everything else).")
    progress: bool = opt(True, "Show progress bars on stderr.")

    def __post_init__(self) -> None:
        check_batch_size(self.batch_size)
        for name in ("max_new_tokens", "max_length", "max_repeats"):
            if getattr(self, name) < 1:
                raise InputError(
                    f"{name} must be at least 1, got {getattr(self, name)}",
                    hint=f"pass a positive --{name.replace('_', '-')}",
                )
        if self.max_examples is not None and self.max_examples < 1:
            raise InputError(
                f"max_examples must be at least 1, got {self.max_examples}",
                hint="pass a positive number, or leave it unset for all",
            )
        if self.scorer not in SCORERS:
            raise InputError(
                f"unknown scorer {self.scorer!r}", hint=f"choose one of: {', '.join(SCORERS)}"
            )
        if self.judge_input not in ("pair", "answer"):
            raise InputError(
                f"judge_input must be 'pair' or 'answer', got {self.judge_input!r}",
                hint="pass pair or answer",
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable values (for provenance and ``--json``)."""
        out = dataclasses.asdict(self)
        for key in ("refusal_phrases", "refusal_start_phrases"):
            if out[key] is not None:
                out[key] = list(out[key])
        if out["judge_labels"] is not None:
            out["judge_labels"] = dict(out["judge_labels"])
        return out

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name → description."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}
