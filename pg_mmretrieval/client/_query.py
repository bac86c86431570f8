"""Turn a search query (a vector, a text or an image) into a vector."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InputError
from ._types import SpaceInfo

__all__ = ["ImageInput", "QueryVector", "encode_query", "query_item"]

QueryVector = Sequence[float] | npt.NDArray[Any]
#: an encoded image file, or the path of one
ImageInput = bytes | str | os.PathLike[str]


def encode_query(
    space: SpaceInfo,
    vector: QueryVector | None,
    text: str | None,
    image: ImageInput | None,
) -> npt.NDArray[np.float32]:
    """The query vector: ``vector`` as is, or ``text``/``image`` encoded by the space's encoder.

    Raises:
        InputError: not exactly one of vector, text and image; or text/image on an external
            space (its vectors come from the application, so must the query's).
        NotFoundError: the space's encoder is not registered in this process.
    """
    given = [x is not None for x in (vector, text, image)]
    if sum(given) != 1:
        raise InputError("pass exactly one of a query vector, text= or image=")
    if vector is not None:
        return np.asarray(vector, dtype=np.float32)
    if space.encoder == "external":
        raise InputError(
            f"space {space.name!r} holds vectors your application computes (encoder "
            "'external'): pass the query as a vector"
        )
    from ..encoders import get_encoder

    encoder = get_encoder(space.encoder)
    item: str | bytes
    if text is not None:
        item = text
    elif isinstance(image, bytes):
        item = image
    else:
        path = Path(os.fspath(image))  # type: ignore[arg-type]
        if not path.is_file():
            raise InputError(f"image file {str(path)!r} does not exist")
        item = path.read_bytes()
    (vec,) = list(encoder.embed_batch([item]))
    return vec


def query_item(
    given: str | bytes | None, text: str | None, image: ImageInput | None
) -> str | bytes | None:
    """The query as a content reranker sees it: ``given``, else the text, else the image's
    bytes (read from its path when it is one)."""
    if given is not None or text is not None:
        return given if given is not None else text
    if image is None or isinstance(image, bytes):
        return image
    path = Path(os.fspath(image))
    if not path.is_file():
        raise InputError(f"image file {str(path)!r} does not exist")
    return path.read_bytes()
