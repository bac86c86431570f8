"""The Python client in one script: register a table, add spaces, insert, wait, search.

Run it against any database with the mmr schema (``mmr db upgrade``)::

    MMR_DATABASE_URL=postgresql://... python examples/client_quickstart.py
"""

from __future__ import annotations

import numpy as np

import pg_mmretrieval as mmr
from pg_mmretrieval import retrieval
from pg_mmretrieval.encoders import get_encoder

with mmr.Client() as client:
    client.conn.execute(
        "CREATE TABLE IF NOT EXISTS photos "
        "(id int PRIMARY KEY, caption text, jpeg bytea, price numeric)"
    )
    photos = client.create_collection(
        "photos",
        "photos",
        image_column="jpeg",
        text_columns=["caption"],
        spaces=[
            # vectors your application computes and stores itself
            mmr.SpaceSpec("caption_vec", "external", dimensions=32),
        ],
    )
    # an encoder space: the worker (`mmr worker`) embeds the captions in the background
    photos.add_space("caption_text", encoder="mmr-test", source_column="caption")

    rows = [
        {"id": 1, "caption": "a red circle", "price": 10},
        {"id": 2, "caption": "a blue square", "price": 20},
        {"id": 3, "caption": "a green triangle", "price": 30},
    ]
    keys = photos.insert(rows)
    print("inserted", keys)

    # Fill the external space with your own vectors (here: the test encoder, in-process).
    encoder = get_encoder("mmr-test")
    vectors = list(encoder.embed_batch([r["caption"] for r in rows]))
    photos.put_embeddings("caption_vec", keys, vectors)
    photos.wait_until_searchable(keys, spaces=["caption_vec"], timeout=10)

    query = next(encoder.embed_batch(["a blue square"]))
    hits = photos.search("caption_vec", query, k=2)
    print([(h.key, round(h.score, 3)) for h in hits])
    assert hits[0].key == 2

    # filters on the table's columns still return k rows
    hits = photos.search("caption_vec", query, k=2, filter={"price": {">=": 15}})
    assert [h.key for h in hits] == [2, 3]

    # composed: a stored row (excluded from the results) modified by a vector or a text
    hits = photos.composed_search("caption_vec", modifier=vectors[2], reference_key=1, k=2)
    # hybrid: full-text over the text columns, fused with vector legs
    retrieval.create_text_index(client.conn, "photos")
    hits = photos.hybrid_search("square", [("caption_vec", query)], k=2)
    # rerank: a SQL reranker by name, or a Python callable (QueryInfo, hits) -> hits
    hits = photos.search("caption_vec", query, k=2, rerank="exact", rerank_depth=20)
    by_key = photos.search(
        "caption_vec",
        query,
        k=2,
        rerank=lambda q, cands: sorted(cands, key=lambda h: h.key),
    )
    for s in photos.status():
        print(f"{s.space} v{s.version}: {s.embedded} embedded, {s.queued} queued")
    assert {s.space: s.queued for s in photos.status()}["caption_text"] == 3
    assert np.isclose(hits[0].score, 1.0, atol=1e-5) and hits[0].key == 2
    assert [h.key for h in by_key] == [1, 2]
