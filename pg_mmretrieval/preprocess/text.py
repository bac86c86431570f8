"""Text tokenization with the model's own ``tokenizer.json`` and context windows.

Texts longer than the context are never cut silently: by default they are split into
windows that overlap by half and the caller averages the windows' embeddings; with
``truncate=True`` only the first window is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, LimitError

__all__ = ["TextPreprocessor", "Window"]


@dataclass(frozen=True)
class Window:
    """Token ids of one window of one text (``text`` is the index in the batch)."""

    text: int
    ids: list[int]


class TextPreprocessor:
    """Tokenizes texts into model-sized windows and pads them into batches.

    Args:
        tokenizer_file: ``tokenizer.json`` (the ``tokenizers`` library's format).
        max_length: the text tower's context, special tokens included.
        pad_token_id: id used to pad ``input_ids``.
        pad_to_max_length: pad every batch to ``max_length`` (SigLIP was trained so).
        truncate: keep only the first window of a long text instead of averaging windows.
        max_windows: most windows one text may need; a longer text is refused
            (:class:`~pg_mmretrieval.errors.PermanentLoadError`) instead of encoded (None: no
            limit).  Ignored with ``truncate``, which encodes one window.
    """

    def __init__(
        self,
        tokenizer_file: Path,
        max_length: int,
        pad_token_id: int,
        *,
        pad_to_max_length: bool = False,
        truncate: bool = False,
        max_windows: int | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as e:
            raise ConfigError(f"cannot load tokenizer {tokenizer_file}: {e}") from e
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        self.pad_to_max_length = pad_to_max_length
        self.truncate = truncate
        self.max_windows = max_windows
        # Special tokens the post-processor puts around a text (e.g. [CLS] ... [SEP]).
        probe = self.tokenizer.encode("a")
        content = [i for i, special in enumerate(probe.special_tokens_mask) if not special]
        first, last = (content[0], content[-1]) if content else (len(probe.ids), len(probe.ids))
        self.prefix: list[int] = probe.ids[:first]
        self.suffix: list[int] = probe.ids[last + 1 :]
        self.budget = max_length - len(self.prefix) - len(self.suffix)
        if self.budget < 2:
            raise ConfigError(f"max_length {max_length} leaves no room for text tokens")

    def windows(self, texts: list[str]) -> list[Window]:
        """Split every text into windows of at most ``max_length`` tokens (specials included).

        Raises:
            PermanentLoadError: a text needs more than ``max_windows`` windows.
        """
        out: list[Window] = []
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        stride = max(1, self.budget // 2)
        for index, enc in enumerate(encodings):
            ids = enc.ids
            if len(ids) <= self.budget or self.truncate:
                starts = [0]
            else:
                starts = list(range(0, len(ids) - self.budget, stride))
                starts.append(len(ids) - self.budget)
                if self.max_windows is not None and len(starts) > self.max_windows:
                    raise LimitError(
                        f"the text is {len(ids)} tokens long: it needs {len(starts)} windows of "
                        f"{self.max_length} tokens, over the limit of {self.max_windows} "
                        "windows per text (raise MMR_MAX_TEXT_WINDOWS or mmr worker "
                        "--max-text-windows, encode it truncated, or split it into rows)"
                    )
            for start in starts:
                out.append(
                    Window(index, self.prefix + ids[start : start + self.budget] + self.suffix)
                )
        return out

    def pad(self, windows: list[Window]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``input_ids`` and ``attention_mask`` (int64 ``[batch, seq]``) for windows."""
        width = self.max_length if self.pad_to_max_length else max(len(w.ids) for w in windows)
        ids = np.full((len(windows), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(windows), width), dtype=np.int64)
        for row, w in enumerate(windows):
            ids[row, : len(w.ids)] = w.ids
            mask[row, : len(w.ids)] = 1
        return ids, mask
