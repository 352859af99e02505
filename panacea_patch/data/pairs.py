"""Prompt/response pairs: loading from any supported source, splitting, and digests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from panacea_patch.data import builtin
from panacea_patch.data.readers import NumberedRows, read_file, read_hf, read_jsonl, where
from panacea_patch.errors import InputError

Role = Literal["harmful", "refusal", "benign"]
Split = Literal["optimize", "evaluate"]

PROMPT_ALIASES = ("prompt", "instruction", "question", "input", "query", "goal")
RESPONSE_ALIASES = ("response", "output", "answer", "completion", "target", "refusal")


@dataclass(frozen=True)
class Pair:
    """One prompt with its response (``None``: a benign prompt without a reference answer).

    ``source`` is the spec it was loaded from and ``line`` its 1-based line (text formats) or row
    (Parquet, datasets), so later errors can point at it.
    """

    prompt: str
    response: str | None
    source: str
    line: int | None = None

    @property
    def where(self) -> str:
        """``source:line`` for messages."""
        return where(self.source, self.line)


def load_pairs(
    src: str,
    *,
    role: Role,
    split: Split | None = None,
    prompt_field: str | None = None,
    response_field: str | None = None,
    limit: int | None = None,
) -> list[Pair]:
    """Load prompt/response pairs for one role.

    ``src`` is a path (``.jsonl``, ``.json``, ``.csv``, ``.parquet``), ``hf:org/name[:config][@split]``
    (a Hugging Face dataset or a local dataset directory; ``@split`` is the dataset's own split,
    default ``train``), or ``builtin:harmful|refusal|benign`` (the name must match ``role``).

    Fields are found by name: the prompt from ``prompt_field`` or the first present of
    prompt/instruction/question/input/query/goal (an Alpaca ``instruction`` is joined with a
    non-empty ``input``); the response likewise from response/output/answer/completion/target/
    refusal. Harmful and refusal pairs need a response; for benign pairs it is optional and an empty
    one counts as absent. Text is stripped of surrounding whitespace.

    ``split`` keeps one half for the optimization or the evaluation stage: rows with a ``split``
    field (the built-in sets) use it; other rows are assigned by a hash of the prompt, so the same
    prompt lands in the same half in every file and every run. ``limit`` keeps the first rows after
    the split filter.

    Raises ``InputError`` naming ``source:line`` for a missing field, empty text, bad JSON,
    undecodable bytes, or an empty result.
    """
    _check_choice("role", role, get_args(Role))
    if split is not None:
        _check_choice("split", split, get_args(Split))
    if limit is not None and limit < 1:
        raise InputError(
            f"limit must be a positive number of rows, got {limit}",
            hint="omit it or pass 1 or more",
        )
    fields = _Fields(role, prompt_field, response_field)
    pairs: list[Pair] = []
    for number, row in _open(src, role):
        # Build before filtering so a bad row fails whichever half is asked for.
        pair = fields.pair(row, src, number)
        if split is not None and _row_split(row, pair) != split:
            continue
        pairs.append(pair)
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        which = f" in the '{split}' split" if split else ""
        raise InputError(
            f"{src}: no {role} rows{which}",
            hint="give a data set with rows"
            + (" (or more rows, so both halves are filled)" if split else ""),
        )
    return pairs


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise InputError(f"unknown {name} '{value}'", hint=f"use one of: {', '.join(allowed)}")


def _open(src: str, role: Role) -> NumberedRows:
    if src.startswith("builtin:"):
        name = src.removeprefix("builtin:")
        data = builtin.read_bytes(name)
        if name != role:
            # e.g. builtin:harmful as refusal data would teach compliance: never what was meant.
            raise InputError(
                f"{src} holds {name} pairs, but it was given as {role} data",
                hint=f"use builtin:{role} for the {role} role",
            )
        return read_jsonl(data, src)
    if src.startswith("hf:"):
        return read_hf(src.removeprefix("hf:"), src)
    return read_file(Path(src).expanduser(), src)


def hash_split(prompt: str) -> Split:
    """Deterministic half for a row without a ``split`` field: parity of sha256(prompt)."""
    digest = hashlib.sha256(prompt.strip().encode("utf-8")).digest()
    return "optimize" if digest[0] % 2 == 0 else "evaluate"


def _row_split(row: Mapping[str, Any], pair: Pair) -> Split:
    value = row.get("split")
    if value is None or value == "":
        return hash_split(pair.prompt)
    if value not in get_args(Split):
        raise InputError(
            f"{pair.where}: split is '{value}'",
            hint="use 'optimize' or 'evaluate' in the split column, or remove the column "
            "to split by prompt hash",
        )
    return value  # type: ignore[no-any-return]


class _Fields:
    """Resolves the prompt and response of one row, with the role's rules."""

    def __init__(self, role: Role, prompt_field: str | None, response_field: str | None) -> None:
        self.role = role
        self.prompt_field = prompt_field
        self.response_field = response_field
        self.response_required = role != "benign"

    def pair(self, row: Mapping[str, Any], src: str, number: int) -> Pair:
        loc = where(src, number)
        prompt = self._prompt(row, loc)
        response = self._response(row, loc)
        return Pair(prompt=prompt, response=response, source=src, line=number)

    def _prompt(self, row: Mapping[str, Any], loc: str) -> str:
        name = self.prompt_field or _first_present(row, PROMPT_ALIASES)
        if name is None or name not in row:
            raise _missing("prompt", self.prompt_field, PROMPT_ALIASES, row, loc, "--prompt-field")
        text = _text(row[name], name, loc)
        if name == "instruction" and self.prompt_field is None:
            # Alpaca keeps the instruction's argument in a separate "input" column.
            extra = row.get("input")
            if isinstance(extra, str) and extra.strip():
                text = f"{text}\n\n{extra.strip()}"
        if not text:
            raise InputError(
                f"{loc}: the prompt ('{name}') is empty",
                hint="remove the row or fill in the prompt",
            )
        return text

    def _response(self, row: Mapping[str, Any], loc: str) -> str | None:
        name = self.response_field or _first_present(row, RESPONSE_ALIASES)
        if name is None or name not in row:
            if not self.response_required and self.response_field is None:
                return None
            raise _missing(
                "response", self.response_field, RESPONSE_ALIASES, row, loc, "--response-field"
            )
        if row[name] is None and not self.response_required:
            return None
        text = _text(row[name], name, loc)
        if text:
            return text
        if not self.response_required:
            return None
        raise InputError(
            f"{loc}: the response ('{name}') is empty; {self.role} pairs need one",
            hint="remove the row or fill in the response",
        )


def _first_present(row: Mapping[str, Any], names: Iterable[str]) -> str | None:
    return next((n for n in names if row.get(n) is not None), None)


def _missing(
    what: str,
    field: str | None,
    aliases: Sequence[str],
    row: Mapping[str, Any],
    loc: str,
    option: str,
) -> InputError:
    looked = f"'{field}'" if field else "any of " + ", ".join(aliases)
    have = ", ".join(map(str, row.keys())) or "none"
    return InputError(
        f"{loc}: no {what} field (looked for {looked}; the row has: {have})",
        hint=f"name the {what} column with {option} (Python: {what}_field=)",
    )


def _text(value: Any, name: str, loc: str) -> str:
    # Numbers are accepted because answers such as 42 are often stored unquoted.
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise InputError(
        f"{loc}: field '{name}' holds {type(value).__name__}, not text",
        hint="store plain strings in the prompt and response columns",
    )


def data_digest(pairs: Iterable[Pair]) -> str:
    """sha256 (hex) over the pairs' prompts and responses, in order, for provenance.

    Each text is length-prefixed so that moving characters between fields or rows changes the
    digest; a missing response hashes differently from an empty one. Source and line do not count:
    the same content from a different file has the same digest.
    """
    h = hashlib.sha256(b"panacea-pairs-v1")
    for pair in pairs:
        for text in (pair.prompt, pair.response):
            for chunk in _digest_chunks(text):
                h.update(chunk)
    return h.hexdigest()


def _digest_chunks(text: str | None) -> Iterator[bytes]:
    if text is None:
        yield b"\x00"
        return
    data = text.encode("utf-8")
    yield b"\x01" + len(data).to_bytes(8, "big")
    yield data
