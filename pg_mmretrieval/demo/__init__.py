"""The demo world: ``mmr demo`` and the procedurally drawn shapes it searches.

Not part of the runtime library's core: nothing in ``pg_mmretrieval`` outside this package
imports it (the ``mmr demo`` command imports it when it runs).  It holds

* :mod:`.run`: ``mmr demo`` itself (a table of shapes, embedded by the worker, searched five
  ways, written as an HTML page),
* :mod:`.sql`: the psql statements the page shows for each search,
* :mod:`.shapes`: the shapes world (images, captions, composed-retrieval triplets and the
  torch-free evaluation of the ``shapes-clip`` model).

``pg_mmretrieval.shapes`` and ``pg_mmretrieval.demo_sql``, the former paths of these modules,
still import them (deprecated aliases, kept for one release).
"""

from __future__ import annotations

from .run import DemoResult, run_demo
from .run import _create_table as _create_table  # tests and bench/sql_queries.py build the table

__all__ = ["DemoResult", "run_demo"]
