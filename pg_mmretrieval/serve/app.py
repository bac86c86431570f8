"""The HTTP API of the encoder service (Starlette): ``/v1/embed``, ``/v1/spaces``, ``/healthz``.

Every answer is JSON; every error is ``{"error": ..., "hint": ...}`` with the status of
docs/serve.md (400 bad input, 401 token, 404 unknown collection/space, 413 over a size limit,
422 modality the encoder lacks or external space, 503 overloaded or a failure that may pass).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..encoders import Encoder, Item
from ..errors import (
    InputError,
    LimitError,
    MMRError,
    NotFoundError,
    Retryable,
    ServiceError,
)
from ..loaders import load_cell
from .batcher import Batcher
from .catalog import ServedSpace, SpaceCatalog
from .config import ServeConfig

__all__ = ["create_app"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_KINDS = {"text": "text", "texts": "text", "image_base64": "image", "images_base64": "image"}


def _error(e: ServiceError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return JSONResponse({"error": str(e), "hint": e.hint}, status_code=e.status, headers=headers)


def _as_service_error(e: Exception) -> ServiceError:
    """The HTTP error for an exception raised while loading or encoding an item."""
    if isinstance(e, ServiceError):
        return e
    if isinstance(e, LimitError):
        return ServiceError(
            413,
            str(e),
            "send a smaller item, or raise the limit the message names (the worker's MMR_* "
            "variable) in the environment of mmr serve",
        )
    if isinstance(e, NotFoundError):
        return ServiceError(404, str(e), "GET /v1/spaces lists what this service encodes")
    if isinstance(e, Retryable):  # a failure that may pass (I/O, a timeout, a busy service)
        return ServiceError(503, str(e), "the failure may pass: retry the request later")
    if isinstance(e, InputError):  # loaders' and encoders' refusals of an item
        return ServiceError(400, str(e), "send a non-empty text, or the bytes of an image file")
    if isinstance(e, MMRError):
        return ServiceError(500, str(e), "see the service's log; the request may be retried")
    log.exception("unexpected error while encoding", exc_info=e)
    return ServiceError(
        500, f"the encoder failed: {type(e).__name__}", "see the service's log for the cause"
    )


#: bodies larger than this are parsed, base64-decoded and header-checked in a thread, so a
#: large image does not hold up the event loop (and the other requests) meanwhile
_BIG_BODY = 256 * 1024


async def _off_loop(body: bytes, fn: Callable[..., _T], *args: Any) -> _T:
    if len(body) > _BIG_BODY:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _Service:
    def __init__(self, config: ServeConfig, catalog: SpaceCatalog) -> None:
        self.config = config
        self.catalog = catalog
        self.batcher: Batcher | None = None
        self._token = config.token.encode() if config.token else None

    # -- plumbing ----------------------------------------------------------------------------

    def check_token(self, request: Request) -> None:
        if self._token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        ok = hmac.compare_digest(given.strip().encode(), self._token)
        if scheme.lower() != "bearer" or not ok:
            raise ServiceError(
                401,
                "missing or wrong bearer token" if header else "this service requires a token",
                "send the header `Authorization: Bearer <token>` with the token mmr serve was "
                "started with (--token / MMR_SERVE_TOKEN)",
            )

    async def read_body(self, request: Request) -> bytes:
        limit = self.config.body_limit
        too_big = ServiceError(
            413,
            f"the request body is over the limit of {limit} bytes",
            "send fewer or smaller items per request (mmr serve --max-body-bytes raises it)",
        )
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    async def resolve(
        self, collection: str, space: str, modality: str
    ) -> tuple[ServedSpace, Encoder]:
        if self.catalog.stale():  # may query the database: off the event loop
            return await asyncio.to_thread(self.catalog.resolve, collection, space, modality)
        return self.catalog.resolve(collection, space, modality)

    # -- parsing -----------------------------------------------------------------------------

    def parse(self, data: bytes) -> tuple[str, str, str, list[Any], bool]:
        """(collection, space, modality, raw items, batch form) of an embed request."""
        try:
            body = json.loads(data)
        except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
            raise ServiceError(400, f"the body is not valid JSON: {e}", _EMBED_HINT) from None
        if not isinstance(body, dict):
            raise ServiceError(400, "the body must be a JSON object", _EMBED_HINT)
        unknown = sorted(set(body) - {"collection", "space", *_KINDS})
        if unknown:
            raise ServiceError(400, f"unknown fields: {', '.join(unknown)}", _EMBED_HINT)
        for name in ("collection", "space"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise ServiceError(400, f'"{name}" must be a non-empty string', _EMBED_HINT)
        given = [k for k in _KINDS if k in body]
        if len(given) != 1:
            raise ServiceError(
                400,
                "give exactly one of text, image_base64, texts, images_base64"
                + (f" (got {', '.join(given)})" if given else ""),
                _EMBED_HINT,
            )
        kind = given[0]
        batch = kind in ("texts", "images_base64")
        raw = body[kind] if batch else [body[kind]]
        if not isinstance(raw, list) or not raw:
            raise ServiceError(400, f'"{kind}" must be a non-empty list', _EMBED_HINT)
        if len(raw) > self.config.max_items:
            raise ServiceError(
                413,
                f'"{kind}" has {len(raw)} items, over the limit of {self.config.max_items} per '
                "request",
                "split the items over several requests (mmr serve --max-items raises it)",
            )
        if not all(isinstance(x, str) for x in raw):
            raise ServiceError(400, f'"{kind}" must hold strings', _EMBED_HINT)
        return body["collection"], body["space"], _KINDS[kind], raw, batch

    def load(self, modality: str, raw: list[str]) -> list[Item]:
        """Encoder inputs through the worker's loaders, with the worker's limits."""
        limits = self.config.limits
        out: list[Item] = []
        for i, value in enumerate(raw):
            where = f" (item {i})" if len(raw) > 1 else ""
            if modality == "text":
                cell: object = value
            else:
                if len(value) // 4 * 3 > limits.max_bytes:  # before decoding anything
                    raise ServiceError(
                        413,
                        f"the image{where} is about {len(value) // 4 * 3} bytes, over the limit "
                        f"of {limits.max_bytes} bytes",
                        "send a smaller image (MMR_MAX_ITEM_BYTES raises the limit)",
                    )
                try:
                    cell = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    raise ServiceError(
                        400,
                        f"image_base64{where} is not valid base64",
                        "send the bytes of an image file (PNG, JPEG, ...) in standard base64",
                    ) from None
            try:
                out.append(load_cell(cell, "text" if modality == "text" else "bytea", limits))
            except Exception as e:
                err = _as_service_error(e)
                raise ServiceError(err.status, f"{err}{where}", err.hint) from None
        return out

    # -- endpoints ---------------------------------------------------------------------------

    async def embed(self, request: Request) -> Response:
        try:
            self.check_token(request)
            body = await self.read_body(request)
            collection, space, modality, raw, batch = await _off_loop(body, self.parse, body)
            found, encoder = await self.resolve(collection, space, modality)
            inputs = await _off_loop(body, self.load, modality, raw)
            assert self.batcher is not None
            work = asyncio.ensure_future(self.batcher.embed(encoder, modality, inputs))
            gone = asyncio.ensure_future(_disconnected(request))
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if not work.done():  # the client went away: its items leave the queue
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work
                return Response(status_code=499)
            try:
                vectors = work.result()
            except Exception as e:
                raise _as_service_error(e) from None
        except ServiceError as e:
            return _error(e)
        answer: dict[str, Any] = {
            "dimensions": found.dimensions,
            "encoder": encoder.name,
            "model_id": encoder.model_id or encoder.name,
        }
        if batch:
            answer["vectors"] = [v.tolist() for v in vectors]
        else:
            answer["vector"] = vectors[0].tolist()
        return JSONResponse(answer)

    async def spaces(self, request: Request) -> JSONResponse:
        try:
            self.check_token(request)
            found = await asyncio.to_thread(self.catalog.describe)
        except ServiceError as e:
            return _error(e)
        return JSONResponse({"spaces": found})

    async def stats(self, request: Request) -> JSONResponse:
        try:
            self.check_token(request)
        except ServiceError as e:
            return _error(e)
        assert self.batcher is not None
        s = self.batcher.stats
        return JSONResponse(
            {
                "batches": s.batches,
                "items": s.items,
                "largest_batch": s.largest_batch,
                "rejected": s.rejected,
                "cancelled": s.cancelled,
                "pending": self.batcher.pending,
                "lanes": s.lanes,
            }
        )

    async def healthz(self, request: Request) -> JSONResponse:
        import onnxruntime

        assert self.batcher is not None
        providers = await asyncio.to_thread(self.batcher.providers)
        return JSONResponse(
            {
                "status": "ok",
                "providers": providers,
                "available_providers": list(onnxruntime.get_available_providers()),
            }
        )


_EMBED_HINT = (
    'POST a JSON object {"collection": ..., "space": ..., "text": ...} or with "image_base64" '
    '(or "texts" / "images_base64" lists); see docs/serve.md'
)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown path, wrong method) in the service's JSON shape."""
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {
            "error": f"{request.method} {request.url.path}: {exc.detail}",
            "hint": "the endpoints are POST /v1/embed, GET /v1/spaces, GET /v1/stats, "
            "GET /healthz (docs/serve.md)",
        },
        status_code=exc.status_code,
        headers=exc.headers,
    )


def create_app(config: ServeConfig, catalog: SpaceCatalog | None = None) -> Starlette:
    """The ASGI application of ``mmr serve`` (run it with uvicorn)."""
    service = _Service(config, catalog or SpaceCatalog(config.database_url, config.catalog_ttl_s))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.batcher = Batcher(
            config.max_batch, config.max_wait_ms / 1000.0, config.threads, config.max_queue
        )
        try:
            yield
        finally:
            await service.batcher.close()
            service.catalog.close()

    return Starlette(
        routes=[
            Route("/v1/embed", service.embed, methods=["POST"]),
            Route("/v1/spaces", service.spaces, methods=["GET"]),
            Route("/v1/stats", service.stats, methods=["GET"]),
            Route("/healthz", service.healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
