"""The peer benchmark behind ``bench/peers.py``: corpus, systems, interleaved measurement.

* :mod:`.corpus`: real English text found on any Debian machine, embedded by the project's
  MiniLM encoder, cached under ``.bench-cache/``;
* :mod:`.systems_pg`: ``mmr.search`` and bare pgvector on the same server;
* :mod:`.systems_lib`: the in-process / embedded peers (faiss, hnswlib, Chroma, LanceDB, Qdrant
  local mode), each optional (the ``bench`` extra);
* :mod:`.core`: exact search, matched-recall settings, round-robin timing, JSON and Markdown.
"""
