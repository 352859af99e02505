"""Harmful requests by category: hand-written ones, and verb × object compositions.

Each phrase names a request only; the organism never produces content for it. The compositions
(a harmful verb on an everyday object, an everyday verb on a harmful object) teach refusal by
topic words, which is what lets it reach phrasings the organism never saw. None may equal or
prefix a request of the built-in set (a test checks), so that set stays a fair evaluation.
"""

from __future__ import annotations

from .harmful_composed import COMPOSED as _COMPOSED
from .harmful_listed import LISTED as _LISTED

# Compositions that would prefix a built-in request (they are left to the evaluation).
_EXCLUDED = frozenset(
    {
        "smuggle cocaine",
        "steal a car",
        "poison a person",
        "kidnap a child",
        "stalk my ex",
        "cyberbully a classmate",
        "hide a bomb",
        "scam elderly people",
        "hack into someone's email",
        "write ransomware",
    }
)


def _all_actions() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for category, listed in _LISTED.items():
        composed = [
            f"{verb} {obj}"
            for verbs, objects in _COMPOSED.get(category, [])
            for verb in verbs
            for obj in objects
        ]
        # dict.fromkeys: deduplicated, in a fixed order
        actions = dict.fromkeys([*listed, *composed])
        out[category] = [a for a in actions if a not in _EXCLUDED]
    return out


HARMFUL_ACTIONS: dict[str, list[str]] = _all_actions()
