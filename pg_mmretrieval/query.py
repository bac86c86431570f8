"""Embed a query (text or image) with the encoder of a space."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from .errors import InputError, NotFoundError
from .registry import get_encoder

__all__ = ["embed_query"]


def embed_query(
    conn: psycopg.Connection[Any],
    collection: str,
    space: str,
    *,
    text: str | None = None,
    image_path: str | None = None,
) -> list[float]:
    """Encode a query text or image file with the encoder of ``collection.space``."""
    row = conn.execute(
        "SELECT encoder FROM mmr.spaces WHERE collection = %s AND space = %s AND active",
        (collection, space),
    ).fetchone()
    if row is None:
        known = conn.execute(
            "SELECT string_agg(space, ', ' ORDER BY space) FROM mmr.spaces "
            "WHERE collection = %s AND active",
            (collection,),
        ).fetchone()
        exists = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM mmr.collections WHERE collection = %s)", (collection,)
        ).fetchone()
        if not (exists and exists[0]):
            raise NotFoundError(
                f"collection {collection!r} does not exist; list them with `mmr collection list`"
            )
        raise NotFoundError(
            f"collection {collection!r} has no space {space!r}; its spaces: "
            f"{(known[0] if known else None) or 'none'}"
        )
    encoder_name = str(row[0])
    if encoder_name == "external":
        raise InputError(
            f"space {space!r} holds vectors your application computed: pass --vector instead"
        )
    encoder = get_encoder(encoder_name)
    item: str | bytes = text if text is not None else Path(str(image_path)).read_bytes()
    (vec,) = list(encoder.embed_batch([item]))
    return [float(x) for x in vec]
