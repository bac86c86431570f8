"""Encoders for exported model directories (docs/model-format.md), one per model.

* ``text`` models (sentence-transformers style): the graph outputs ``last_hidden_state``,
  pooled here as the manifest says (``mean`` over the attention mask, or ``cls``).
* ``clip`` / ``siglip`` models: a text tower and a vision tower, each projecting into the
  shared space inside its graph.

Every model is registered as ``NAME`` (fp32) and ``NAME:VARIANT`` for each checked variant
(``int8``, ``fp16``).  Sessions and tokenizers load on first use, never at registration.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pg_mmretrieval.encoders import Encoder, Item
from pg_mmretrieval.errors import ConfigError, InputError, NotFoundError, PermanentLoadError
from pg_mmretrieval.hookspecs import hookimpl
from pg_mmretrieval.loaders import LoadLimits
from pg_mmretrieval.modeldir import Manifest, discover_models, read_manifest
from pg_mmretrieval.onnx import Session, get_session, length_sorted_batches, size_batches
from pg_mmretrieval.preprocess import ImagePreprocessor, TextPreprocessor, Window

__all__ = ["OnnxEncoder", "encoders_for"]

log = logging.getLogger(__name__)


def _unit(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    out: npt.NDArray[np.float32] = x / np.maximum(norms, 1e-12)
    return out


class OnnxEncoder(Encoder):
    """An encoder running a model directory's ONNX towers with onnxruntime.

    Options (:meth:`with_options`): ``truncate`` (bool) keeps only the first context window
    of long texts instead of averaging overlapping windows.

    ``embed_batch`` gathers up to ``batch_size * sort_window`` items, sorts their texts by
    token length and runs them in batches of ``batch_size``: each batch is padded only to its
    own longest text (measured 1.2-1.5x on MiniLM captions vs batches in input order).
    Results come back in input order.
    """

    #: batches' worth of items whose texts are length-sorted together
    sort_window: int = 8

    def __init__(
        self, manifest: Manifest, variant: str | None = None, *, truncate: bool = False
    ) -> None:
        self.manifest = manifest
        self.variant = variant
        self.truncate = truncate
        self.name = manifest.name + (f":{variant}" if variant else "")
        self.dimension = manifest.dimension
        self.modalities = manifest.modalities
        self.batch_size = 32
        self.model_id = manifest.model_id + (f":{variant}" if variant else "")
        if truncate:
            self.model_id += "/truncate"
        for modality in self.modalities:
            manifest.tower_file(modality, variant)  # fail early on a broken manifest
        self._lock = threading.Lock()
        self._text: TextPreprocessor | None = None
        self._image: ImagePreprocessor | None = None

    def with_options(self, **options: Any) -> Encoder:
        unknown = sorted(set(options) - {"truncate"})
        if unknown:
            raise InputError(f"encoder {self.name!r}: unknown options {unknown} (known: truncate)")
        truncate = bool(options.get("truncate", self.truncate))
        return OnnxEncoder(self.manifest, self.variant, truncate=truncate)

    # -- lazy resources ---------------------------------------------------------------------

    def session(self, modality: str) -> Session:
        """The (cached) onnxruntime session of a tower."""
        return get_session(self.manifest.tower_file(modality, self.variant))

    @property
    def provider(self) -> str:
        modality = "image" if "image" in self.modalities else "text"
        return self.session(modality).provider

    def _text_pre(self) -> TextPreprocessor:
        with self._lock:
            if self._text is None:
                raw = self.manifest.raw
                self._text = TextPreprocessor(
                    self.manifest.directory / str(raw.get("tokenizer", "tokenizer.json")),
                    max_length=int(raw["max_length"]),
                    pad_token_id=int(raw.get("pad_token_id", 0)),
                    pad_to_max_length=bool(raw.get("pad_to_max_length", False)),
                    truncate=self.truncate,
                    max_windows=LoadLimits.from_env().max_text_windows,
                )
            return self._text

    def _image_pre(self) -> ImagePreprocessor:
        with self._lock:
            if self._image is None:
                fname = str(self.manifest.raw.get("preprocessor", "preprocessor_config.json"))
                path = self.manifest.directory / fname
                try:
                    config = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as e:
                    raise ConfigError(f"cannot read {path}: {e}") from e
                limits = LoadLimits.from_env()
                self._image = ImagePreprocessor(
                    config, max_pixels=limits.max_image_pixels, max_bytes=limits.max_image_bytes
                )
            return self._image

    # -- embedding --------------------------------------------------------------------------

    def embed_batch(self, items: Iterable[Item]) -> Iterator[npt.NDArray[np.float32]]:
        """Yield one L2-normalised float32 vector per item, in order (see the class doc)."""
        chunk: list[Item] = []
        limit = max(1, self.batch_size) * max(1, self.sort_window)
        for item in items:
            self._check_item(item)
            chunk.append(item)
            if len(chunk) >= limit:
                yield from self._run(chunk)
                chunk = []
        if chunk:
            yield from self._run(chunk)

    def _embed(self, batch: Sequence[Item]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(batch), self.dimension), dtype=np.float32)
        texts = [i for i, item in enumerate(batch) if isinstance(item, str)]
        images = [i for i, item in enumerate(batch) if not isinstance(item, str)]
        if texts:
            out[texts] = self.embed_texts([str(batch[i]) for i in texts])
        if images:
            out[images] = self.embed_images([bytes(batch[i]) for i in images])  # type: ignore[arg-type]
        return out

    def _run_text(self, windows: list[Window]) -> npt.NDArray[np.float32]:
        pre = self._text_pre()
        session = self.session("text")
        tower = self.manifest.tower("text")
        ids, mask = pre.pad(windows)
        feeds: dict[str, npt.NDArray[Any]] = {"input_ids": ids}
        if "attention_mask" in session.inputs:
            feeds["attention_mask"] = mask
        if "token_type_ids" in session.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        output = str(tower.get("output", "text_embeds"))
        (hidden,) = session.run(feeds, [output])
        hidden = np.asarray(hidden, dtype=np.float32)
        if self.manifest.kind != "text":
            embeds: npt.NDArray[np.float32] = hidden
            return embeds
        pooling = self.manifest.raw.get("pooling", "mean")
        if pooling == "cls":
            pooled: npt.NDArray[np.float32] = hidden[:, 0]
            return pooled
        if pooling != "mean":
            raise ConfigError(f"model {self.manifest.name!r}: unsupported pooling {pooling!r}")
        m = mask[:, :, None].astype(np.float32)
        summed: npt.NDArray[np.float32] = (hidden * m).sum(axis=1)
        pooled_mean: npt.NDArray[np.float32] = summed / np.maximum(m.sum(axis=1), 1e-9)
        return pooled_mean

    def embed_texts(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Raw (not yet normalised) text embeddings, windows of long texts averaged."""
        pre = self._text_pre()
        windows = pre.windows(texts)
        vectors = np.zeros((len(windows), self.dimension), dtype=np.float32)
        # Length-sorted sub-batches: padding to the batch's longest window costs less.
        for idx in length_sorted_batches([len(w.ids) for w in windows], self.batch_size):
            vectors[idx] = self._run_text([windows[i] for i in idx])
        counts = np.bincount([w.text for w in windows], minlength=len(texts))
        if np.all(counts == 1):
            return vectors
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        np.add.at(out, [w.text for w in windows], _unit(vectors))
        averaged: npt.NDArray[np.float32] = (out / counts[:, None]).astype(np.float32)
        return averaged

    def embed_images(self, images: list[bytes]) -> npt.NDArray[np.float32]:
        """Raw (not yet normalised) image embeddings.

        Raises:
            PermanentLoadError: an item is not a readable image, is over ``MMR_MAX_ITEM_BYTES``
                or has too many pixels.
        """
        limit = LoadLimits.from_env().max_bytes
        for data in images:
            if len(data) > limit:
                raise PermanentLoadError(
                    f"image file is {len(data)} bytes, over the limit of {limit} bytes "
                    "(raise MMR_MAX_ITEM_BYTES to accept it)"
                )
        session = self.session("image")
        output = str(self.manifest.tower("image").get("output", "image_embeds"))
        dtype = session.inputs["pixel_values"].dtype
        parts = []
        for part in size_batches(images, max(1, self.batch_size)):
            pixels = self._image_pre()(list(part))
            (emb,) = session.run({"pixel_values": pixels.astype(dtype, copy=False)}, [output])
            parts.append(np.asarray(emb, dtype=np.float32))
        result: npt.NDArray[np.float32] = np.concatenate(parts)
        return result


def encoders_for(directory: Any) -> list[OnnxEncoder]:
    """The encoders of one model directory: fp32 and each variant.

    Raises:
        ConfigError: the manifest is invalid.
    """
    manifest = read_manifest(directory)
    variants = sorted(manifest.raw.get("variants", {}))
    return [OnnxEncoder(manifest)] + [OnnxEncoder(manifest, v) for v in variants]


@hookimpl
def register_encoders(register: Callable[[Encoder], None]) -> None:
    for name, directory in discover_models().items():
        try:
            found = encoders_for(directory)
        except (ConfigError, NotFoundError) as e:
            # One broken directory must not hide the other models; `mmr models verify` tells.
            log.warning("skipping model %r in %s: %s", name, directory, e)
            continue
        for encoder in found:
            register(encoder)
