"""Encoders: the public API (``get_encoder``) and the base class plugins implement.

The registry is filled by plugins through the ``register_encoders`` hook (see
``pg_mmretrieval.plugins``).  An encoder turns items into vectors: ``str`` is text, ``bytes``
is an encoded image file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import EncoderError, InputError, NotFoundError

__all__ = ["Encoder", "Item", "get_encoder", "list_encoders", "register_encoder"]

Item = str | bytes


class Encoder:
    """Base class of encoders (the shape of ``llm``'s embedding models).

    Subclasses set ``name``, ``dimension`` and ``modalities`` and implement ``_embed``; the
    base class splits input into batches and checks modalities and results.
    """

    name: str = ""
    dimension: int = 0
    modalities: frozenset[str] = frozenset({"text"})
    batch_size: int = 32
    #: identifies the exact weights and preprocessing (stored with every embedding)
    model_id: str = ""

    @property
    def provider(self) -> str:
        """The ONNX Runtime execution provider in use (``CPUExecutionProvider`` etc.)."""
        return "python"

    def with_options(self, **options: Any) -> Encoder:
        """A copy of this encoder configured by ``options`` (e.g. ``truncate=True``).

        Raises:
            InputError: an option this encoder does not know.
        """
        if options:
            raise InputError(
                f"encoder {self.name!r} takes no options (got {', '.join(sorted(options))})"
            )
        return self

    def embed_batch(self, items: Iterable[Item]) -> Iterator[npt.NDArray[np.float32]]:
        """Yield one L2-normalised float32 vector per item, in order.

        Raises:
            InputError: an item's modality is not supported, or it is empty.
            EncoderError: the model failed.
        """
        batch: list[Item] = []
        for item in items:
            self._check_item(item)
            batch.append(item)
            if len(batch) >= self.batch_size:
                yield from self._run(batch)
                batch = []
        if batch:
            yield from self._run(batch)

    def _check_item(self, item: Item) -> None:
        if isinstance(item, str):
            modality = "text"
        elif isinstance(item, bytes | bytearray | memoryview):
            modality = "image"
        else:
            raise InputError(
                f"encoder {self.name!r}: items must be str (text) or bytes (an image file), "
                f"not {type(item).__name__}"
            )
        if modality not in self.modalities:
            raise InputError(
                f"encoder {self.name!r} does not embed {modality} (it embeds "
                f"{', '.join(sorted(self.modalities))})"
            )
        if len(item) == 0:
            raise InputError(f"encoder {self.name!r}: empty {modality} item")

    def _run(self, batch: Sequence[Item]) -> Iterator[npt.NDArray[np.float32]]:
        out = np.asarray(self._embed(batch), dtype=np.float32)
        if out.shape != (len(batch), self.dimension):
            raise EncoderError(
                f"encoder {self.name!r} returned shape {out.shape}, expected "
                f"({len(batch)}, {self.dimension})"
            )
        if not np.all(np.isfinite(out)):
            raise EncoderError(f"encoder {self.name!r} produced NaN or infinite values")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise EncoderError(f"encoder {self.name!r} produced a zero vector")
        yield from out / norms

    def _embed(self, batch: Sequence[Item]) -> npt.NDArray[np.float32]:
        raise NotImplementedError


_REGISTRY: dict[str, Encoder] = {}


def register_encoder(encoder: Encoder) -> None:
    """Add an encoder to the registry (plugins do this through ``register_encoders``)."""
    _REGISTRY[encoder.name] = encoder


def list_encoders() -> dict[str, Encoder]:
    """Registered encoders by name."""
    _ensure_loaded()
    return dict(_REGISTRY)


def _ensure_loaded() -> None:
    from ..plugins import load_encoders

    load_encoders()


def get_encoder(name: str, **options: Any) -> Encoder:
    """The registered encoder called ``name``, configured by ``options`` when given.

    Args:
        name: an encoder name (``mmr plugins`` lists them), e.g. ``minilm`` or ``minilm:int8``.
        options: encoder options, e.g. ``truncate=True`` (see :meth:`Encoder.with_options`).

    Raises:
        NotFoundError: no such encoder; the message lists the registered ones.
        InputError: an unknown option.
    """
    _ensure_loaded()
    try:
        encoder = _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise NotFoundError(
            f"no encoder named {name!r}; registered encoders: {known}. "
            "Install or enable the plugin that provides it (`mmr plugins` lists them)."
        ) from None
    return encoder.with_options(**options) if options else encoder
