"""``/v1/artifacts/{id}``: media Chorus made (pictures, reply audio), served by URL.

Artifacts live in the artifact store (``services/common/artifacts``: a local folder, or S3
shared by every replica), by content address per tenant, so an id names the same bytes
forever: answers carry a strong ``ETag`` and may be cached for a year, privately (the caller's
key decides what it may see). A caller reaches its own tenant's artifacts only; an unknown id,
a malformed one and another tenant's all answer the same 404. Byte ranges are served (audio
players seek with them).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from gateway.context import state_of
from gateway.errors import ApiError
from gateway.keys import ANONYMOUS, Principal
from gateway.openapi import BINARY, documented
from services.common.artifacts import Artifact, ArtifactMeta
from services.common.errors import ChorusError, NotFound, ResourceExhausted

__all__ = ["blueprint", "save", "url_of"]

blueprint = Blueprint("artifacts", __name__, url_prefix="/artifacts")

CACHE_CONTROL = "private, max-age=31536000, immutable"
MEDIA_TYPES = ("image/png", "audio/wav", "audio/mpeg", "audio/ogg", "audio/flac", "audio/pcm")


def _tenant() -> str:
    principal: Principal = g.get("principal", ANONYMOUS)
    return principal.tenant


def _not_found() -> ApiError:
    return ApiError(404, "no such artifact", "not_found", "artifact_id")


def save(data: bytes, media_type: str, **meta: Any) -> Artifact:
    """Keep ``data`` in the store for the calling tenant; ``meta``: ``ArtifactMeta``'s other
    fields (model, backend, turn id, width, height, ...)."""
    store = state_of().artifacts()
    try:
        return store.put(data, ArtifactMeta(tenant=_tenant(), media_type=media_type, **meta))
    except ResourceExhausted as error:
        raise ApiError(413, error.message, "artifact_too_large") from None
    except ChorusError as error:
        raise ApiError(503, error.message, "artifact_store_unavailable") from None


def url_of(artifact: Artifact) -> str:
    """The absolute URL of ``artifact``, as the caller reached this gateway."""
    return f"{request.url_root}v1/artifacts/{artifact.id}"


@blueprint.get("/<artifact_id>")
@documented(
    "getArtifact",
    "artifacts",
    (None, "The artifact's bytes, with its media type (206 for a byte range)"),
    media=dict.fromkeys(MEDIA_TYPES, BINARY),
    other={206: (None, "The requested byte range"), 304: (None, "Not modified")},
    errors=(404, 416, 503),
)
def get_artifact(artifact_id: str) -> Response:
    """Fetch an artifact

    A picture or a reply's audio that Chorus kept, by its id (a content hash: the bytes never
    change). ``Range: bytes=a-b`` answers 206; ``If-None-Match`` with its ETag answers 304.
    """
    store, tenant = state_of().artifacts(), _tenant()
    try:
        artifact = store.stat(artifact_id, tenant)
    except NotFound:
        raise _not_found() from None
    headers = {
        "ETag": f'"{artifact.id}"',
        "Cache-Control": CACHE_CONTROL,
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
    }
    if request.if_none_match.contains(artifact.id):
        return Response(status=304, headers=headers)
    wanted = request.range
    if wanted is not None and request.if_range.etag not in (None, artifact.id):
        wanted = None  # If-Range names other bytes: the whole artifact
    span = wanted.range_for_length(artifact.size) if wanted is not None else None
    if wanted is not None and span is None:
        error = ApiError(416, "the range is outside the artifact", "range_not_satisfiable")
        refused = jsonify(error.body())
        refused.status_code = 416
        refused.headers.update(headers)
        refused.headers["Content-Range"] = f"bytes */{artifact.size}"
        return refused
    start, stop = span if span is not None else (0, artifact.size)
    try:
        data = store.get(artifact.id, tenant, start, stop)
    except NotFound:  # removed between the two calls
        raise _not_found() from None
    except ChorusError as error:
        raise ApiError(503, error.message, "artifact_store_unavailable") from None
    response = Response(data, mimetype=artifact.meta.media_type, headers=headers)
    if span is not None:
        response.status_code = 206
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{artifact.size}"
    return response
