"""The vocabulary of the shapes world: attribute values, :class:`Attributes` and captions.

A scene's :class:`Attributes` (shape, colour, size, position, count) are the ground truth for
captions, zero-shot classification and composed retrieval.  Captions come in three kinds: one
fixed :func:`canonical_caption`, random paraphrases (:func:`caption`) and captions that leave
some attributes open (:func:`partial_caption`).  The pictures are drawn by
:mod:`.generator`, which re-exports every public name of this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

__all__ = [
    "ATTRIBUTES",
    "COLOURS",
    "COUNTS",
    "IMAGE_SIZE",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "STYLES",
    "Attributes",
    "canonical_caption",
    "caption",
    "matches",
    "partial_caption",
    "random_attributes",
]

IMAGE_SIZE = 64
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "cross": "crosses",
}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 30),
    "green": (40, 175, 60),
    "blue": (40, 80, 235),
    "purple": (145, 55, 205),
    "pink": (245, 120, 190),
}
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
COUNTS: tuple[int, ...] = (1, 2, 3)
STYLES: tuple[str, ...] = ("flat", "paper")
ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "size", "position", "count")

COUNT_WORDS: dict[int, tuple[str, ...]] = {1: ("one", "a", "a single"), 2: ("two",), 3: ("three",)}
CANONICAL_COUNT = {1: "one", 2: "two", 3: "three"}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big"),
}
POSITION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left", "on the left side", "in the left part"),
    "right": ("on the right", "at the right", "on the right side", "in the right part"),
    "top": ("at the top", "near the top", "in the upper part", "at the top of the image"),
    "bottom": (
        "at the bottom",
        "near the bottom",
        "in the lower part",
        "at the bottom of the image",
    ),
    "center": ("in the center", "in the middle", "at the center", "in the centre"),
}
CANONICAL_POSITION = {p: POSITION_WORDS[p][0] for p in POSITIONS}


@dataclass(frozen=True)
class Attributes:
    """Ground truth of one scene: ``count`` identical shapes in one region."""

    shape: str
    colour: str
    size: str
    position: str
    count: int

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; expected one of {tuple(COLOURS)}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; expected one of {SIZES}")
        if self.position not in POSITIONS:
            raise ValueError(f"unknown position {self.position!r}; expected one of {POSITIONS}")
        if self.count not in COUNTS:
            raise ValueError(f"unknown count {self.count!r}; expected one of {COUNTS}")

    def with_(self, **changes: Any) -> Attributes:
        """A copy with some attributes changed (validated)."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The attributes as a plain dict (JSON-friendly)."""
        return asdict(self)

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        """A hashable identity of the attribute set."""
        return (self.shape, self.colour, self.size, self.position, self.count)


def random_attributes(rng: np.random.Generator) -> Attributes:
    """Uniformly random attributes."""
    return Attributes(
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        colour=tuple(COLOURS)[int(rng.integers(len(COLOURS)))],
        size=SIZES[int(rng.integers(len(SIZES)))],
        position=POSITIONS[int(rng.integers(len(POSITIONS)))],
        count=COUNTS[int(rng.integers(len(COUNTS)))],
    )


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _noun(shape: str | None, count: int | None) -> str:
    base = shape if shape is not None else "shape"
    if count is not None and count > 1:
        return PLURALS.get(base, base + "s")
    return base


def _count_phrase(count: int, rng: np.random.Generator | None, following: str) -> str:
    word = CANONICAL_COUNT[count] if rng is None else _pick(rng, COUNT_WORDS[count])
    if word == "a":
        return _article(following)
    if word == "a single":
        return "a single"
    return word


def canonical_caption(a: Attributes) -> str:
    """The one fixed caption of an attribute set: ``"two small red circles on the left"``."""
    return (
        f"{CANONICAL_COUNT[a.count]} {a.size} {a.colour} {_noun(a.shape, a.count)} "
        + (CANONICAL_POSITION[a.position])
    )


def caption(a: Attributes, rng: np.random.Generator) -> str:
    """A random paraphrase mentioning every attribute."""
    size = _pick(rng, SIZE_WORDS[a.size])
    pos = _pick(rng, POSITION_WORDS[a.position])
    noun = _noun(a.shape, a.count)
    template = int(rng.integers(6))
    if template == 0:
        return f"{_count_phrase(a.count, rng, size)} {size} {a.colour} {noun} {pos}"
    if template == 1:
        verb = "is" if a.count == 1 else "are"
        return f"{pos} there {verb} {_count_phrase(a.count, rng, size)} {size} {a.colour} {noun}"
    if template == 2:
        return f"a picture of {_count_phrase(a.count, rng, size)} {size} {a.colour} {noun} {pos}"
    if template == 3:
        return (
            f"an image with {_count_phrase(a.count, rng, a.colour)} {a.colour} {size} {noun} {pos}"
        )
    if template == 4:
        return f"{_count_phrase(a.count, rng, a.colour)} {a.colour} {noun} {pos} , {size}"
    return f"{_count_phrase(a.count, rng, size)} {size} {noun} {pos} , {a.colour}"


def partial_caption(a: Attributes, mentioned: Sequence[str], rng: np.random.Generator) -> str:
    """A caption mentioning only the attributes in ``mentioned`` (others left open).

    Without ``shape`` the noun is "shape"; without ``count`` no number is said and the noun is
    singular (the caption then fits any count).
    """
    unknown = set(mentioned) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown attributes {sorted(unknown)}; expected some of {ATTRIBUTES}")
    words: list[str] = []
    if "size" in mentioned:
        words.append(_pick(rng, SIZE_WORDS[a.size]))
    if "colour" in mentioned:
        words.append(a.colour)
    count = a.count if "count" in mentioned else None
    words.append(_noun(a.shape if "shape" in mentioned else None, count))
    if count is not None:
        words.insert(0, _count_phrase(count, rng, words[0]))
    if "position" in mentioned:
        words.append(_pick(rng, POSITION_WORDS[a.position]))
    return " ".join(words)


def matches(a: Attributes, mentioned: Mapping[str, Any]) -> bool:
    """Whether ``a`` agrees with every attribute value in ``mentioned``."""
    return all(getattr(a, k) == v for k, v in mentioned.items())
