"""The async client: the same API with ``await``, for asyncio applications."""

from __future__ import annotations

import asyncio

import numpy as np

import pg_mmretrieval as mmr


async def main() -> None:
    async with await mmr.AsyncClient.connect() as client:
        await client.conn.execute(
            "CREATE TABLE IF NOT EXISTS notes (id bigint PRIMARY KEY, body text)"
        )
        notes = await client.create_collection(
            "notes",
            "notes",
            text_columns=["body"],
            spaces=[mmr.SpaceSpec("vec", "external", dimensions=4)],
        )
        keys = await notes.insert([{"id": i, "body": f"note {i}"} for i in range(1, 4)])
        vectors = np.eye(4, dtype=np.float32)[:3] + 0.1
        # wait in the background while the vectors are stored
        waiting = asyncio.create_task(notes.wait_until_searchable(keys, timeout=10))
        await notes.put_embeddings("vec", keys, list(vectors))
        await waiting
        hits = await notes.search("vec", vectors[1], k=1)
        print(hits)
        assert hits[0].key == 2

        # composed, hybrid and reranked searches: the same arguments as the sync client's
        hits = await notes.composed_search("vec", modifier=vectors[2], reference_key=1, k=2)
        await client.conn.execute("SELECT mmr.create_text_index('notes')")
        hybrid = await notes.hybrid_search("note", [("vec", vectors[0])], k=3)
        reranked = await notes.search("vec", vectors[0], k=2, rerank="exact")
        assert 1 not in [h.key for h in hits] and len(hybrid) == 3
        assert reranked[0].key == 1


asyncio.run(main())
