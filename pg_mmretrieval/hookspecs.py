"""The plugin hooks of pg_mmretrieval (pluggy project name ``pg_mmretrieval``).

Every ``register_*`` hook receives a ``register`` callback and calls it once per object it
provides (the shape of ``llm``'s hooks); the host keeps the registries.  Plugins implement
hooks with :data:`hookimpl` and are found through the ``pg_mmretrieval`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    import psycopg

    from .bases import Encoder, Loader, Reranker

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "pg_mmretrieval"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorate a plugin's hook implementations with this.
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- models -----------------------------------------------------------------------------------


@hookspec
def register_encoders(register: Callable[[Encoder], None]) -> None:
    """Provide encoders (text and/or image to vector).

    Called once, the first time an encoder is looked up.  Construct encoders cheaply: load
    model weights lazily, on the first ``embed_batch``.

    :param register: call ``register(encoder)`` with each :class:`~pg_mmretrieval.encoders.Encoder`
        instance; its ``name`` must be unique across plugins.
    """


@hookspec
def register_loaders(register: Callable[[Loader], None]) -> None:
    """Provide loaders that turn a table cell into encoder input.

    A loader handles one ``kind`` of cell (``bytea``, ``path``, ``url``, ``text`` or a kind of
    the plugin's own) and enforces the limits it is given (size, timeout).

    :param register: call ``register(loader)`` with each
        :class:`~pg_mmretrieval.loaders.Loader`; a later plugin's loader for the same kind
        replaces an earlier one.
    """


@hookspec
def register_rerankers(register: Callable[[Reranker], None]) -> None:
    """Provide rerankers, applied in Python to a list of search candidates.

    :param register: call ``register(reranker)`` with each
        :class:`~pg_mmretrieval.rerankers.Reranker` (a content reranker implements ``score``,
        another ``rerank``); names must be unique.
    """


# -- command line and connections -------------------------------------------------------------


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``mmr`` command-line group.

    :param cli: the top-level ``click`` group; use ``@cli.command()`` or ``cli.add_command``.
    """


@hookspec
def prepare_connection(conn: psycopg.Connection[Any]) -> None:
    """Set up every new database connection opened by :func:`pg_mmretrieval.connect`.

    Runs after pgvector's types are registered: register type adapters, set session GUCs
    (``hnsw.ef_search``...).  Keep it fast: it runs once per connection, and leave no
    transaction open on a non-autocommit connection (commit what you ran).

    :param conn: the new psycopg connection (autocommit as the caller asked).
    """
