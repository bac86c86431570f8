"""``mmr.embed`` inside the server: the Python its PL/Python functions call.

``mmr.embed(collection, space, item)`` (``sql/idempotent/036-embed.sql``) runs
:func:`embed` in the backend's interpreter.  The space comes from ``mmr._embed_target`` (which
checks the names, the caller's right to read the space's column and the settings, with SQLSTATEs
and hints); the item goes through the worker's own loaders (:func:`pg_mmretrieval.loaders.
load_cell`, so the worker's size limits apply) and the encoder's ``embed_batch`` (the same plugin,
preprocessing, ONNX model and normalisation as the worker).  Encoders and their ONNX sessions are
cached per backend (the registry and :func:`pg_mmretrieval.onnx.get_session`).  When
``mmr.encoder_url`` is set, the item is posted to the encoder service instead
(``POST <url>/v1/embed``, the contract of ``mmr serve``).

Every error reaches SQL through ``plpy.error`` with a SQLSTATE and a hint, never a traceback as
the message.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from typing import Any

__all__ = ["embed", "post_embed"]

_TARGET_SQL = "SELECT * FROM mmr._embed_target($1, $2)"
_PLANS: dict[str, Any] = {}
#: the largest answer read from the encoder service (16000 floats as JSON fit easily)
_MAX_RESPONSE = 4 * 1024 * 1024


class SqlError(Exception):
    """An error for SQL: message, SQLSTATE, hint."""

    def __init__(self, message: str, sqlstate: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.hint = hint


def _limits() -> Any:
    from .loaders import LoadLimits

    cached = _PLANS.get("limits")
    if cached is None:
        cached = _PLANS["limits"] = LoadLimits.from_env()
    return cached


def _load(item: str | bytes) -> str | bytes:
    """The item after the worker's loader: its emptiness and size limits."""
    from .errors import LoadError
    from .loaders import load_cell

    kind = "text" if isinstance(item, str) else "bytea"
    what = "text" if kind == "text" else "image"
    if (isinstance(item, str) and not item.strip()) or len(item) == 0:
        raise SqlError(
            f"mmr.embed: the {what} is empty",
            "22023",
            "Pass a non-empty text, or the bytes of an image file (e.g. pg_read_binary_file "
            "as a superuser, or a bytea column).",
        )
    try:
        return load_cell(item, kind, _limits())
    except LoadError as e:
        raise _load_error(e) from None


def _load_error(e: Exception) -> SqlError:
    over = "limit" in str(e)
    return SqlError(
        f"mmr.embed: {e}",
        "54000" if over else "22023",
        "The server's limits are the worker's (MMR_MAX_TEXT_CHARS, MMR_MAX_ITEM_BYTES, "
        "MMR_MAX_IMAGE_PIXELS, ... in the server's environment; docs/worker.md)."
        if over
        else "Pass a text, or the bytes of an image file (PNG, JPEG, WebP, ...).",
    )


def _encode_local(target: dict[str, Any], item: str | bytes) -> list[float]:
    from .encoders import get_encoder
    from .errors import MMRError

    try:
        encoder = get_encoder(str(target["encoder"]))
    except MMRError as e:
        raise SqlError(
            f"mmr.embed: {e}",
            "42704",
            "Install the plugin or model of this encoder in the server's Python environment "
            "(the one recorded by `mmr db upgrade`), or set mmr.encoder_url to an encoder "
            "service that has it.",
        ) from None
    modality = "text" if isinstance(item, str) else "image"
    if modality not in encoder.modalities:
        raise SqlError(
            f"mmr.embed: encoder {encoder.name!r} does not embed {modality} (it embeds "
            f"{', '.join(sorted(encoder.modalities))})",
            "42809",
            f"Give this space a {' or '.join(sorted(encoder.modalities))} query, or use another "
            f"space of the collection whose encoder takes {modality} (mmr.spaces lists them).",
        )
    if encoder.dimension != int(target["dimensions"]):
        raise SqlError(
            f"mmr.embed: encoder {encoder.name!r} produces {encoder.dimension} dimensions, but "
            f"the space has {target['dimensions']}",
            "55000",
            "The server's model is not the one the space was built with: install the same model "
            "in the server's Python environment.",
        )
    model_id = encoder.model_id or encoder.name
    if target["model_id"] is not None and target["model_id"] != model_id:
        raise SqlError(
            f"mmr.embed: the space holds vectors of model {target['model_id']}, but the "
            f"server's encoder {encoder.name!r} is {model_id}",
            "55000",
            "Install the model the space was filled with in the server's Python environment, or "
            "add a new version of the space (mmr.add_space(..., new_version => true)).",
        )
    loaded = _load(item)
    os.environ["MMR_ONNX_THREADS"] = str(int(target["threads"]))
    try:
        (vec,) = list(encoder.embed_batch([loaded]))
    except MMRError as e:  # what the worker would dead-letter: the item, said as such
        raise _load_error(e) from None
    return [float(x) for x in vec.tolist()]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
_STATUS_SQLSTATE = {400: "22023", 401: "28000", 403: "28000", 404: "42704", 413: "54000"}


def post_embed(
    url: str,
    body: dict[str, str],
    *,
    token: str | None,
    timeout: float,
) -> dict[str, Any]:
    """POST ``body`` to ``<url>/v1/embed`` and return the JSON answer (the ``mmr serve``
    contract); errors become :class:`SqlError` with the service's message and hint."""
    endpoint = url.rstrip("/") + "/v1/embed"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        endpoint, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            raw = response.read(_MAX_RESPONSE + 1)
    except urllib.error.HTTPError as e:
        try:
            payload = json.loads(e.read(_MAX_RESPONSE) or b"{}")
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        message = str(payload.get("error") or e.reason or "error")
        hint = payload.get("hint")
        raise SqlError(
            f"mmr.embed: the encoder service at {url} answered {e.code}: {message}",
            _STATUS_SQLSTATE.get(e.code, "22023" if 400 <= e.code < 500 else "58000"),
            str(hint)
            if hint
            else "Check the service's log; RESET mmr.encoder_url (as its administrator) to "
            "encode in the backend.",
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise SqlError(
            f"mmr.embed: cannot reach the encoder service at {url}: {reason}",
            "08001",
            "Start it (`mmr serve`), check mmr.encoder_url and mmr.encoder_timeout, or have "
            "an administrator reset mmr.encoder_url to encode in the backend.",
        ) from None
    if len(raw) > _MAX_RESPONSE:
        raise SqlError(
            f"mmr.embed: the encoder service at {url} answered more than {_MAX_RESPONSE} bytes",
            "58000",
            "mmr.encoder_url must name a pg_mmretrieval encoder service (`mmr serve`).",
        )
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    if not isinstance(payload, dict) or not isinstance(payload.get("vector"), list):
        raise SqlError(
            f"mmr.embed: the encoder service at {url} did not answer with a vector",
            "58000",
            "mmr.encoder_url must name a pg_mmretrieval encoder service (`mmr serve`).",
        )
    return payload


def _encode_remote(
    target: dict[str, Any], collection: str, space: str, item: str | bytes
) -> list[float]:
    loaded = _load(item)  # the same limits before anything leaves the server
    body = {"collection": collection, "space": space}
    if isinstance(loaded, str):
        body["text"] = loaded
    else:
        body["image_base64"] = base64.b64encode(bytes(loaded)).decode("ascii")
    payload = post_embed(
        str(target["encoder_url"]),
        body,
        token=target["encoder_token"],
        timeout=float(target["encoder_timeout"]),
    )
    try:
        vec = [float(x) for x in payload["vector"]]
    except (TypeError, ValueError):
        vec = []
    if len(vec) != int(target["dimensions"]) or not all(
        x == x and abs(x) != float("inf") for x in vec
    ):
        raise SqlError(
            f"mmr.embed: the encoder service answered {len(vec)} numbers for space {space!r}, "
            f"which has {target['dimensions']} dimensions",
            "22000",
            "The service must run the space's own model (GET /v1/spaces lists what it serves).",
        )
    return vec


def _vector_text(vec: list[float]) -> str:
    return "[" + ",".join(repr(x) for x in vec) + "]"


def embed(
    plpy: Any, collection: str, space: str, item: str | bytes | None
) -> dict[str, str | None]:
    """The body of ``mmr._embed_py``: the vector (pgvector's text) of ``item`` in ``space``, or
    the error for ``mmr.embed`` to raise (``state``, ``message``, ``hint``; PL/Python would
    prefix a raised error's message with its Python class).

    Args:
        plpy: PL/Python's ``plpy`` module (SPI).
        item: a text (``str``) or the bytes of an image file (``bytes``); None gives None.
    """
    if item is None:
        return _result(None)
    try:
        plan = _PLANS.get("target")
        if plan is None:
            plan = _PLANS["target"] = plpy.prepare(_TARGET_SQL, ["text", "text"])
        # names, privileges and settings, checked in SQL with their SQLSTATEs and hints
        try:
            target = dict(plpy.execute(plan, [collection, space])[0])
        except plpy.SPIError as e:
            # spidata: (sqlerrcode, detail, hint, query, position, ...)
            spidata = getattr(e, "spidata", None) or (None, None, None)
            raise SqlError(
                str(e.args[0] if e.args else e),
                getattr(e, "sqlstate", None) or "XX000",
                spidata[2] if len(spidata) > 2 else None,
            ) from None
        data: str | bytes = item if isinstance(item, str) else bytes(item)
        if target["encoder_url"]:
            vec = _encode_remote(target, collection, space, data)
        else:
            vec = _encode_local(target, data)
    except SqlError as e:
        return _result(None, e.sqlstate, str(e), e.hint)
    except Exception as e:  # a model failure: a clear message, never a traceback
        return _result(
            None,
            "38000",
            f"mmr.embed: encoding failed ({type(e).__name__}: {e})",
            "The worker's log shows whether it fails on the same item; `mmr models verify` "
            "checks the model's files.",
        )
    return _result(_vector_text(vec))


def _result(
    vec: str | None, state: str | None = None, message: str | None = None, hint: str | None = None
) -> dict[str, str | None]:
    return {"vec": vec, "state": state, "message": message, "hint": hint}
