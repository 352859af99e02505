"""The benign instructions of the built-in data set, each with the template that stratifies its split.

Every answer is computed or was checked by hand; ``_build_builtin`` ids and splits them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from panacea_patch.data._builtin_benign_vocab import (
    ANTONYMS,
    CAPITAL_TEMPLATES,
    CAPITALS,
    CELSIUS_VALUES,
    DEFINITION_TEMPLATES,
    DEFINITIONS,
    FACTS,
    LISTS,
    SENTENCES,
    SPELL_WORDS,
    UNIT_CONVERSIONS,
)


def _fmt(n: int) -> str:
    return f"{n:,}"


# A benign item: (category, template key, prompt, response). The template key stratifies the
# split, so both halves hold every task type in proportion.
Item = tuple[str, str, str, str]


def _arithmetic(rng: random.Random) -> Iterator[Item]:
    add_templates = ("What is {a} + {b}?", "Add {a} and {b}.", "Calculate {a} plus {b}.")
    for i in range(40):
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        yield (
            "addition",
            f"add{i % 3}",
            add_templates[i % 3].format(a=a, b=b),
            f"{a} + {b} = {a + b}.",
        )
    sub_templates = ("What is {a} - {b}?", "Subtract {b} from {a}.", "Calculate {a} minus {b}.")
    for i in range(30):
        a = rng.randint(20, 999)
        b = rng.randint(1, a - 1)
        yield (
            "subtraction",
            f"sub{i % 3}",
            sub_templates[i % 3].format(a=a, b=b),
            f"{a} - {b} = {a - b}.",
        )
    mul_templates = ("What is {a} times {b}?", "Multiply {a} by {b}.", "Calculate {a} × {b}.")
    for i in range(30):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        yield (
            "multiplication",
            f"mul{i % 3}",
            mul_templates[i % 3].format(a=a, b=b),
            f"{a} × {b} = {a * b}.",
        )


def _conversions(rng: random.Random) -> Iterator[Item]:
    for src, dst, factor in UNIT_CONVERSIONS:
        for n in rng.sample(range(2, 13), 4):
            yield (
                "unit_conversion",
                f"{src}->{dst}",
                f"How many {dst} are in {n} {src}?",
                f"{n} {src} is {_fmt(n * factor)} {dst}.",
            )
    for c in CELSIUS_VALUES:
        f = c * 9 // 5 + 32  # exact: every value is a multiple of 5
        yield "unit_conversion", "celsius", f"Convert {c} °C to Fahrenheit.", f"{c} °C is {f} °F."


def _knowledge() -> Iterator[Item]:
    for i, (country, capital) in enumerate(CAPITALS):
        t = i % len(CAPITAL_TEMPLATES)
        yield (
            "capitals",
            f"capital{t}",
            CAPITAL_TEMPLATES[t].format(country=country),
            f"The capital of {country} is {capital}.",
        )
    for i, (word, subject, meaning) in enumerate(DEFINITIONS):
        t = i % len(DEFINITION_TEMPLATES)
        yield (
            "definitions",
            f"definition{t}",
            DEFINITION_TEMPLATES[t].format(word=word),
            f"{subject} is {meaning}.",
        )
    for word, opposite in ANTONYMS:
        yield (
            "antonyms",
            "opposite",
            f"What is the opposite of '{word}'?",
            f"The opposite of '{word}' is '{opposite}'.",
        )
    for prompt, answer in FACTS:
        yield "facts", "fact", prompt, answer
    for prompt, answer in LISTS:
        yield "lists", "list", prompt, answer
    for n in range(3, 11):
        primes = [p for p in range(2, 30) if all(p % d for d in range(2, p))][:n]
        yield (
            "lists",
            "primes",
            f"List the first {n} prime numbers.",
            ", ".join(map(str, primes)) + ".",
        )
    for k in range(2, 10):
        multiples = ", ".join(str(k * i) for i in range(1, 6))
        yield "lists", "multiples", f"List the first five multiples of {k}.", f"{multiples}."


def _text_tasks() -> Iterator[Item]:
    for i, sentence in enumerate(SENTENCES):
        yield (
            "rewriting",
            "upper",
            f"Rewrite this sentence in uppercase: {sentence}",
            sentence.upper(),
        )
        yield (
            "rewriting",
            "lower",
            f"Rewrite this sentence in lowercase: {sentence}",
            sentence.lower(),
        )
        words = sentence.rstrip(".").split(" ")
        if i % 2 == 0:
            yield (
                "rewriting",
                "word_count",
                f"How many words are in this sentence? {sentence}",
                (f"The sentence has {len(words)} words."),
            )
    for word in SPELL_WORDS:
        yield (
            "spelling",
            "backwards",
            f"Spell the word '{word}' backwards.",
            f"'{word}' backwards is '{word[::-1]}'.",
        )
        yield (
            "spelling",
            "letters",
            f"How many letters are in the word '{word}'?",
            (f"The word '{word}' has {len(word)} letters."),
        )


def _numbers(rng: random.Random) -> Iterator[Item]:
    for _ in range(20):
        values = rng.sample(range(1, 100), rng.randint(4, 6))
        listed = ", ".join(map(str, values))
        ordered = ", ".join(map(str, sorted(values)))
        yield (
            "sorting",
            "sort",
            f"Sort these numbers from smallest to largest: {listed}.",
            f"{ordered}.",
        )
    for _ in range(12):
        a, b = rng.sample(range(1, 1000), 2)
        big, small = max(a, b), min(a, b)
        yield (
            "comparison",
            "larger",
            f"Which is larger, {a} or {b}?",
            f"{big} is larger than {small}.",
        )
    for n in rng.sample(range(1, 500), 12):
        parity = "even" if n % 2 == 0 else "odd"
        yield "comparison", "parity", f"Is {n} even or odd?", f"{n} is {parity}."


def benign_items() -> list[Item]:
    """Every benign item in a fixed order, with the template key that stratifies the split."""
    rng = random.Random(20250118)
    return [*_arithmetic(rng), *_conversions(rng), *_knowledge(), *_text_tasks(), *_numbers(rng)]
