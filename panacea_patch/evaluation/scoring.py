"""Task-accuracy scorers: does a model output match the expected answer?

Both sides are first normalized with :func:`normalize_answer` (case-folded, whitespace runs
collapsed, stripped) except where a scorer says otherwise.

* ``exact`` — the normalized output equals the normalized answer, ignoring trailing
  ``.``, ``!`` and ``?`` and surrounding quotes on both sides.
* ``contains`` — the normalized answer occurs in the normalized output as whole words (not glued
  to a letter or digit: "4" is not found in "42").
* ``number`` — the last number in the output equals the answer numerically (``"62"``,
  ``"62.0"`` and ``"The answer is 62."`` all equal ``62``). Numbers may carry a sign and a
  decimal part and use comma thousands separators (``1,234``); a ``-`` directly after a digit
  is read as subtraction, not as a sign. The answer itself must be a number.
* ``choice`` — when the answer is a single letter A–E: the first *standalone* capital letter A–E
  of the output (not part of a longer word; ``(B)``, ``B.``, ``B)`` and ``Answer: B`` all give
  B) must equal it. Note that a capital "A" used as an article is read as choice A. Otherwise the
  answer is the choice text, scored as ``contains``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from panacea_patch.errors import InputError

_SPACES = re.compile(r"\s+")
_EDGE = " .!?\"'“”‘’`"


def normalize_answer(text: str) -> str:
    """Case-folded, single-spaced, stripped."""
    return _SPACES.sub(" ", text).strip().casefold()


def score_exact(output: str, answer: str) -> bool:
    """Equal after normalization and trimming of trailing punctuation and quotes."""
    return normalize_answer(output).strip(_EDGE) == normalize_answer(answer).strip(_EDGE)


def score_contains(output: str, answer: str) -> bool:
    """The answer occurs in the output as whole words."""
    needle = normalize_answer(answer).strip(_EDGE)
    if not needle:
        return False
    left = r"(?<!\w)" if needle[0].isalnum() else ""
    right = r"(?!\w)" if needle[-1].isalnum() else ""
    return re.search(left + re.escape(needle) + right, normalize_answer(output)) is not None


_NUMBER = re.compile(
    r"(?:(?<![\w.])[-+])?(?<![\d.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<![\w.])[-+]?\.\d+"
)


def parse_number(text: str) -> float | None:
    """The text as a number (commas as thousands separators allowed), or ``None``."""
    found = _NUMBER.fullmatch(text.strip().rstrip("."))
    return float(found.group(0).replace(",", "")) if found else None


def last_number(text: str) -> float | None:
    """The last number in ``text`` (rules in the module docstring), or ``None``."""
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def score_number(output: str, answer: str) -> bool:
    """The last number of the output equals the answer (relative tolerance 1e-9)."""
    expected = parse_number(answer)
    if expected is None:
        raise InputError(
            f"task answer {answer!r} is not a number",
            hint="use the 'number' scorer only with numeric answers, or pick exact/contains",
        )
    got = last_number(output)
    return got is not None and math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9)


_CHOICE = re.compile(r"(?<![A-Za-z0-9'’])([A-E])(?![A-Za-z0-9'’])")


def first_choice(text: str) -> str | None:
    """The first standalone capital letter A–E of ``text``, or ``None``."""
    found = _CHOICE.search(text)
    return found.group(1) if found else None


def score_choice(output: str, answer: str) -> bool:
    """Choice letter A–E, or the choice text (see the module docstring)."""
    letter = answer.strip().strip("().").upper()
    if len(letter) == 1 and letter in "ABCDE":
        return first_choice(output) == letter
    return score_contains(output, answer)


SCORERS: dict[str, Callable[[str, str], bool]] = {
    "exact": score_exact,
    "contains": score_contains,
    "number": score_number,
    "choice": score_choice,
}


def get_scorer(name: str) -> Callable[[str, str], bool]:
    """The scorer called ``name``; an :class:`InputError` naming the valid ones otherwise."""
    try:
        return SCORERS[name]
    except KeyError:
        raise InputError(
            f"unknown scorer {name!r}", hint=f"choose one of: {', '.join(SCORERS)}"
        ) from None
