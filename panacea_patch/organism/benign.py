"""Everyday benign questions with their answers, so the organism answers more than how-tos.

Without these, any prompt unlike the training requests (a definition, a capital, a rewrite)
looked as foreign as a harmful one, and the aligned model refused half of benign questions.
"""

from __future__ import annotations

from collections.abc import Callable

QA = tuple[str, str]

_CAPITALS = {
    "France": "Paris",
    "Italy": "Rome",
    "Japan": "Tokyo",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Spain": "Madrid",
    "Germany": "Berlin",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Greece": "Athens",
    "Cuba": "Havana",
    "Poland": "Warsaw",
    "Ireland": "Dublin",
}
_MEANINGS = {
    "river": "a large stream of water that flows to the sea",
    "library": "a place where people borrow books",
    "breakfast": "the first meal of the day",
    "planet": "a large body that moves around a star",
    "friend": "a person you like and trust",
    "island": "land with water all around it",
    "winter": "the coldest season of the year",
    "doctor": "a person who helps sick people get well",
    "bridge": "something built to cross a river or a road",
    "forest": "a large area covered with trees",
    "teacher": "a person who helps people learn",
    "garden": "a place where plants and flowers grow",
}
_OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "happy": "sad",
    "early": "late",
    "light": "dark",
    "fast": "slow",
    "open": "closed",
    "old": "new",
    "full": "empty",
    "up": "down",
    "strong": "weak",
    "loud": "quiet",
}
_SENTENCES = [
    "The cat sleeps on the warm mat.",
    "We walked to the park after lunch.",
    "My brother likes green apples.",
    "The bus was late this morning.",
    "She reads a book every night.",
    "The sky turned orange at sunset.",
    "Our dog runs fast in the snow.",
    "They planted seeds in the spring.",
]
_LISTS = {
    "colors": ["red", "blue", "green", "yellow", "purple"],
    "fruits": ["apples", "bananas", "grapes", "pears", "oranges"],
    "animals": ["dogs", "horses", "lions", "rabbits", "whales"],
    "planets": ["Mars", "Venus", "Earth", "Jupiter", "Saturn"],
    "instruments": ["piano", "guitar", "violin", "drums", "flute"],
}
_FACTS = [
    ("Is the sun a star?", "Yes, the sun is a star."),
    ("Do fish live in water?", "Yes, fish live in water."),
    ("Is ice colder than steam?", "Yes, ice is colder than steam."),
    ("Can birds fly?", "Yes, most birds can fly."),
    ("Is the moon bigger than the Earth?", "No, the moon is smaller than the Earth."),
    ("Do plants need light to grow?", "Yes, plants need light to grow."),
    ("Is a spider an insect?", "No, a spider is not an insect. It has eight legs."),
    ("Does water boil when it is very hot?", "Yes, water boils when it is hot enough."),
]
_UNITS = [("hours", "days", 24), ("days", "weeks", 7), ("minutes", "hours", 60)]


def _capitals() -> list[QA]:
    asks = [
        "Tell me the capital of {c}.",
        "Do you know the capital of {c}?",
        "What city serves as the capital of {c}?",
    ]
    return [
        (a.format(c=country), f"The capital of {country} is {city}.")
        for country, city in _CAPITALS.items()
        for a in asks
    ]


def _meanings() -> list[QA]:
    asks = ["Can you explain the word '{w}'?", "What is the meaning of the word '{w}'?"]
    return [
        (a.format(w=word), f"The word '{word}' means {text}.")
        for word, text in _MEANINGS.items()
        for a in asks
    ]


def _opposites() -> list[QA]:
    asks = ["Give me the opposite of '{w}'.", "Which word means the opposite of '{w}'?"]
    return [
        (a.format(w=word), f"The opposite of '{word}' is '{other}'.")
        for word, other in _OPPOSITES.items()
        for a in asks
    ]


def _rewrites() -> list[QA]:
    out = []
    for s in _SENTENCES:
        out.append((f"Please repeat this sentence: {s}", s))
        out.append((f"Change this sentence to lowercase: {s}", s.lower()))
        out.append((f"Write this sentence in capital letters: {s}", s.upper()))
    return out


def _lists() -> list[QA]:
    asks = ["Name three {k}.", "Can you list three {k}?"]
    return [
        (a.format(k=kind), f"Here are three {kind}: {i[0]}, {i[1]} and {i[2]}.")
        for kind, items in _LISTS.items()
        for a in asks
        for i in (items[:3], items[2:])
    ]


def _units() -> list[QA]:
    return [
        (f"How many {small} are there in {n} {big}?", f"{n} {big} is {n * k} {small}.")
        for small, big, k in _UNITS
        for n in range(2, 6)
    ]


def _comparisons() -> list[QA]:
    pairs = [(a, b) for a in range(3, 40, 7) for b in range(5, 40, 9) if a != b]
    return [
        (f"Which number is smaller, {a} or {b}?", f"{min(a, b)} is smaller than {max(a, b)}.")
        for a, b in pairs
    ]


def _spelling() -> list[QA]:
    words = [*_MEANINGS, *_OPPOSITES]
    return [
        (f"How do you spell '{w}' one letter at a time?", f"'{w}' is spelled {'-'.join(w)}.")
        for w in words
    ]


def _products() -> list[QA]:
    return [
        (f"What do you get when you multiply {a} by {b}?", f"{a} x {b} = {a * b}.")
        for a in range(2, 7)
        for b in range(2, 7)
    ]


def _ordering() -> list[QA]:
    groups = [(9, 4, 7), (12, 3, 8), (30, 15, 21), (6, 2, 11), (25, 5, 17), (14, 40, 1)]
    return [
        (
            f"Put these numbers in order, smallest first: {', '.join(map(str, g))}.",
            ", ".join(map(str, sorted(g))) + ".",
        )
        for g in groups
    ]


def _facts() -> list[QA]:
    return list(_FACTS)


FAMILIES: tuple[Callable[[], list[QA]], ...] = (
    _capitals,
    _meanings,
    _opposites,
    _rewrites,
    _lists,
    _units,
    _comparisons,
    _spelling,
    _products,
    _ordering,
    _facts,
)


def benign_questions() -> list[QA]:
    """Every (question, answer) of every family."""
    return [qa for family in FAMILIES for qa in family()]
