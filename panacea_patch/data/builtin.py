"""The built-in data sets shipped in the package (``builtin:harmful|refusal|benign``).

The files under ``builtin/`` are written by ``_build_builtin.py``. ``harmful`` and ``refusal``
share ids, prompts and splits row by row; each set is split into ``optimize`` and ``evaluate``
halves, stratified by category (harmful prompts are split by underlying request, so evaluation
never sees a rephrasing of an optimization prompt).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from panacea_patch.errors import InputError

NAMES = ("harmful", "refusal", "benign")


def read_bytes(name: str) -> bytes:
    """The raw JSON Lines of one built-in set."""
    if name not in NAMES:
        raise InputError(
            f"unknown built-in data set 'builtin:{name}'",
            hint="use builtin:harmful, builtin:refusal or builtin:benign",
        )
    return (resources.files(__package__) / "builtin" / f"{name}.jsonl").read_bytes()


@cache
def _prompts(name: str) -> frozenset[str]:
    rows = (json.loads(line) for line in read_bytes(name).decode("utf-8").splitlines() if line)
    return frozenset(row["prompt"] for row in rows)


def builtin_prompt_set(name: str | None = None) -> set[str]:
    """Prompts of one built-in set, or of all of them when ``name`` is None.

    For disjointness checks: data made elsewhere (e.g. the demo organism's own alignment and
    attack prompts) must not overlap these, or evaluation on the built-in sets would be tainted.
    """
    names = NAMES if name is None else (name,)
    return set().union(*(_prompts(n) for n in names))


def harmful_vocabulary() -> dict[str, tuple[str, ...]]:
    """The requests ("actions") behind ``builtin:harmful``, by category.

    Generators of other harmful prompts should avoid these actions, not just these exact
    prompts, so that their prompts are not rephrasings of the built-in ones.
    """
    from panacea_patch.data._build_builtin import HARM_CATEGORIES

    return {category.name: category.actions for category in HARM_CATEGORIES}


def harmful_templates() -> tuple[str, ...]:
    """The request templates (``"How do I {action}?"`` ...) used for ``builtin:harmful``."""
    from panacea_patch.data._build_builtin import HARMFUL_TEMPLATES

    return HARMFUL_TEMPLATES
