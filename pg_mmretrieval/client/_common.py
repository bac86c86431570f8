"""Helpers both clients share that do no I/O: query vectors of composed and hybrid searches,
wait messages, the generator's property marker and the space cache's guard."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from ..errors import InputError
from ._query import ImageInput, QueryVector, encode_query
from ._types import SpaceInfo

__all__ = [
    "composed_vectors",
    "guarded",
    "leg_vector",
    "raise_failed",
    "sync_property",
    "timeout_message",
]

F = TypeVar("F", bound=Callable[..., Any])


def sync_property(method: F) -> F:
    """Marks an async method that is a property in the generated sync client
    (``await coll.spaces()`` there reads ``coll.spaces``)."""
    return method


def composed_vectors(
    info: SpaceInfo,
    reference: QueryVector | None,
    reference_image: ImageInput | None,
    modifier: QueryVector | None,
    modifier_text: str | None,
) -> tuple[npt.NDArray[np.float32] | None, npt.NDArray[np.float32] | None]:
    """A composed query's reference and modifier vectors (None where not given)."""
    ref = None
    if reference is not None or reference_image is not None:
        ref = encode_query(info, reference, None, reference_image)
    mod = None
    if modifier is not None or modifier_text is not None:
        mod = encode_query(info, modifier, modifier_text, None)
    return ref, mod


def leg_vector(info: SpaceInfo, query: QueryVector | str) -> npt.NDArray[np.float32]:
    """A hybrid leg's query: a vector, or a text encoded with the space's encoder."""
    if isinstance(query, str):
        return encode_query(info, None, query, None)
    return encode_query(info, query, None, None)


def raise_failed(collection: str, failed: int, error: str | None) -> None:
    if failed:
        raise InputError(
            f"collection {collection!r}: {failed} (row, space) pair(s) failed to embed and were "
            f"dead-lettered, e.g.: {error}. Fix the content (an UPDATE queues it again) or run "
            f"SELECT mmr.retry_failed({collection!r})."
        )


def timeout_message(collection: str, left: int, failed: int, timeout: float) -> str:
    also = f" ({failed} more failed)" if failed else ""
    return (
        f"collection {collection!r}: {left} (row, space) pair(s) still not searchable{also} "
        f"after {timeout:g} s. Is a worker running (`mmr worker`)? External spaces are filled "
        "by put_embeddings. See client.status()."
    )


# The guard a search whose query the client encoded with a cached space carries: the statement
# returns no row unless the active versions of those spaces are still the cached ones.  It is
# a one-time filter (evaluated before the search runs), so a stale vector never reaches it.
_GUARD = (
    " WHERE (SELECT array_agg(s.id ORDER BY s.id) FROM mmr._space s JOIN mmr._collection c "
    "ON c.id = s.collection_id WHERE c.name = %(mmr_guard_c)s AND s.active "
    "AND s.name = ANY(%(mmr_guard_s)s::text[])) = %(mmr_guard_ids)s::int[]"
)


def guarded(
    query: str, params: Mapping[str, Any], collection: str, ids: Mapping[str, int]
) -> tuple[str, dict[str, Any]]:
    """A search statement (``SELECT key, score FROM mmr.f(...)``) that returns no row when the
    active version of a space in ``ids`` (space name -> ``mmr._space.id``) has changed."""
    names: Sequence[str] = sorted(ids)
    out = dict(params)
    out["mmr_guard_c"] = collection
    out["mmr_guard_s"] = list(names)
    out["mmr_guard_ids"] = sorted(ids[n] for n in names)
    simple = query.lstrip().startswith("SELECT ") and " WHERE " not in query.upper()
    if simple and query.rstrip().endswith(")"):
        return query + _GUARD, out
    # the statement is one of pg_mmretrieval.retrieval's (constant text, values as parameters)
    return f"SELECT * FROM ({query}) mmr_q" + _GUARD, out  # noqa: S608
