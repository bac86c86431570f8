"""Cost of one long text on MiniLM around the text limits (docs/security.md, issue 12 item 10).

    .venv/bin/python bench/text_limits.py 86000     # a text at the window limit (126 windows)
    .venv/bin/python bench/text_limits.py 100000    # over it: refused after tokenization

Builds a text of N characters from a fixed word list (seeded), encodes it with ``minilm`` in
this process and prints the token count, the outcome, the wall time of the encode and the peak
RSS (``ru_maxrss``) before and after.  Run one size per process: the peak RSS only grows.
"""

from __future__ import annotations

import random
import resource
import sys
import time

from pg_mmretrieval.encoders import get_encoder
from pg_mmretrieval.errors import PermanentLoadError

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "bright",
    "stars",
    "shine",
    "above",
    "quiet",
    "hills",
    "and",
    "rivers",
]


def text_of(n: int) -> str:
    rng = random.Random(0)
    parts: list[str] = []
    size = 0
    while size < n:
        word = rng.choice(WORDS) + " "
        parts.append(word)
        size += len(word)
    return "".join(parts)[:n]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 86000
    text = text_of(n)
    enc = get_encoder("minilm")
    list(enc.embed_batch(["warm up"]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tokens = len(enc._text_pre().tokenizer.encode(text, add_special_tokens=False).ids)  # type: ignore[attr-defined]
    start = time.perf_counter()
    try:
        list(enc.embed_batch([text]))
        outcome = "encoded"
    except PermanentLoadError as e:
        outcome = f"refused: {e}"
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"chars={n} tokens={tokens} time={elapsed:.2f}s peak_rss={peak / 1024:.0f}MiB "
        f"(before {before / 1024:.0f}MiB)\n{outcome}"
    )


if __name__ == "__main__":
    main()
