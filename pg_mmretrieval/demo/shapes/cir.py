"""Composed-retrieval triplets over the shapes world: (reference, modification text, target).

The modification changes exactly one attribute of the reference; the relevant targets of a
triplet are all images whose attributes equal ``target`` (see :func:`relevant`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pg_mmretrieval.demo.shapes.generator import (
    COLOURS,
    COUNTS,
    POSITIONS,
    SHAPES,
    SIZES,
    Attributes,
    random_attributes,
)

__all__ = ["KINDS", "Triplet", "change", "make_triplets", "modification_text", "relevant"]

KINDS: tuple[str, ...] = ("colour", "shape", "size", "position", "count")
_NUMBERS = {1: "one", 2: "two", 3: "three"}
_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars"}
_PLURAL["cross"] = "crosses"
_PLACES = {
    "left": "to the left",
    "right": "to the right",
    "top": "to the top",
    "bottom": "to the bottom",
    "center": "to the center",
}


@dataclass(frozen=True)
class Triplet:
    """One composed query: the reference scene, the modification text and the target scene."""

    reference: Attributes
    modification: str
    target: Attributes
    kind: str


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _art(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def modification_text(ref: Attributes, tgt: Attributes, rng: np.random.Generator) -> str:
    """A paraphrased instruction turning ``ref`` into ``tgt`` (they differ in one attribute)."""
    diff = [k for k in KINDS if getattr(ref, k) != getattr(tgt, k)]
    if len(diff) != 1:
        raise ValueError(f"reference and target must differ in exactly one attribute, got {diff}")
    kind = diff[0]
    it = "it" if ref.count == 1 else "them"
    if kind == "colour":
        return _pick(
            rng,
            (
                f"make {it} {tgt.colour}",
                f"change the colour to {tgt.colour}",
                f"turn {it} {tgt.colour}",
                f"the same but {tgt.colour}",
            ),
        )
    if kind == "shape":
        if ref.count == 1:
            old, new = ref.shape, tgt.shape
            return _pick(
                rng,
                (
                    f"change the {old} to {_art(new)} {new}",
                    f"make it {_art(new)} {new}",
                    f"replace the {old} with {_art(new)} {new}",
                ),
            )
        old, new = _PLURAL[ref.shape], _PLURAL[tgt.shape]
        return _pick(
            rng,
            (f"change the {old} to {new}", f"make them {new}", f"replace the {old} with {new}"),
        )
    if kind == "size":
        if tgt.size == "large":
            return _pick(rng, (f"make {it} bigger", f"make {it} larger", f"enlarge {it}"))
        return _pick(rng, (f"make {it} smaller", f"shrink {it}", f"make {it} tiny"))
    if kind == "position":
        place = _PLACES[tgt.position]
        return _pick(rng, (f"move {it} {place}", f"put {it} {place}", f"shift {it} {place}"))
    # count
    if tgt.count == ref.count + 1:
        return _pick(
            rng, ("add another one", "add one more", f"make {_NUMBERS[tgt.count]} of them")
        )
    if tgt.count == ref.count - 1:
        return _pick(rng, ("remove one", "take one away", f"keep only {_NUMBERS[tgt.count]}"))
    return f"make {_NUMBERS[tgt.count]} of them"


def change(ref: Attributes, kind: str, rng: np.random.Generator) -> Attributes:
    """A copy of ``ref`` with attribute ``kind`` set to another random value."""
    options: Sequence[object]
    if kind == "colour":
        options = [c for c in COLOURS if c != ref.colour]
    elif kind == "shape":
        options = [s for s in SHAPES if s != ref.shape]
    elif kind == "size":
        options = [s for s in SIZES if s != ref.size]
    elif kind == "position":
        options = [p for p in POSITIONS if p != ref.position]
    else:
        options = [c for c in COUNTS if c != ref.count]
    value = options[int(rng.integers(len(options)))]
    return ref.with_(**{kind: value})


def make_triplets(n: int, seed: int, kinds: Sequence[str] = KINDS) -> list[Triplet]:
    """``n`` seeded triplets; the changed attribute cycles through ``kinds``."""
    bad = set(kinds) - set(KINDS)
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
    rng = np.random.default_rng([seed, 7])
    out: list[Triplet] = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        ref = random_attributes(rng)
        tgt = change(ref, kind, rng)
        out.append(Triplet(ref, modification_text(ref, tgt, rng), tgt, kind))
    return out


def relevant(triplet: Triplet, corpus: Sequence[Attributes]) -> list[int]:
    """Indexes of the corpus items whose attributes equal the triplet's target."""
    return [i for i, a in enumerate(corpus) if a == triplet.target]
