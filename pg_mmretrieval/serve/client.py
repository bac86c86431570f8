"""A client of the encoder service with the standard library only (usable in PL/Python).

    from pg_mmretrieval.serve.client import embed_remote
    vec = embed_remote("http://127.0.0.1:8765", "products", "clip_image", "a red circle")

Errors the service answers come back as :class:`~pg_mmretrieval.errors.ServiceError` with its
HTTP ``status``, message and ``hint``; a service that cannot be reached is status 503.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InputError, ServiceError

__all__ = ["embed_remote", "embed_remote_batch"]


def _post(url: str, body: dict[str, Any], token: str | None, timeout_s: float) -> dict[str, Any]:
    if not url.startswith(("http://", "https://")):
        raise InputError(f"the encoder service URL must start with http:// or https://: {url!r}")
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/embed", json.dumps(body).encode(), headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read())
            error, hint = str(detail["error"]), str(detail["hint"])
        except (ValueError, KeyError, TypeError):
            error, hint = f"HTTP {e.code} {e.reason}", "check the encoder service's log"
        raise ServiceError(e.code, error, hint) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ServiceError(
            503,
            f"cannot reach the encoder service at {url}: {reason}",
            "start it (`mmr serve`) or correct its URL",
        ) from None


def _body(collection: str, space: str, items: list[str | bytes], batch: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"collection": collection, "space": space}
    if all(isinstance(i, str) for i in items):
        texts = [str(i) for i in items]
        body.update({"texts": texts} if batch else {"text": texts[0]})
    elif all(isinstance(i, bytes | bytearray | memoryview) for i in items):
        images = [base64.b64encode(bytes(i)).decode() for i in items]  # type: ignore[arg-type]
        body.update({"images_base64": images} if batch else {"image_base64": images[0]})
    else:
        raise InputError("items must all be str (texts) or all bytes (image files)")
    return body


def embed_remote(
    url: str,
    collection: str,
    space: str,
    item: str | bytes,
    *,
    token: str | None = None,
    timeout_s: float = 30.0,
) -> npt.NDArray[np.float32]:
    """The vector of a text (``str``) or an image file (``bytes``) for a space, from the
    service at ``url``.

    Raises:
        ServiceError: the service's answer (``status``, message, ``hint``), or 503 when it
            cannot be reached.
    """
    out = _post(url, _body(collection, space, [item], False), token, timeout_s)
    return np.asarray(out["vector"], dtype=np.float32)


def embed_remote_batch(
    url: str,
    collection: str,
    space: str,
    items: list[str | bytes],
    *,
    token: str | None = None,
    timeout_s: float = 30.0,
) -> list[npt.NDArray[np.float32]]:
    """The vectors of several texts or several images (one modality) in one request."""
    if not items:
        return []
    out = _post(url, _body(collection, space, list(items), True), token, timeout_s)
    return [np.asarray(v, dtype=np.float32) for v in out["vectors"]]
