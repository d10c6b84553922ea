"""The Hugging Face hosted inference API, through ``huggingface_hub.InferenceClient``.

Each image is one ``text_to_image`` call (seed, seed + 1, ...). The API runs the denoising
steps remotely, so progress is reported once per image, with step == total_steps. HTTP errors
map onto gRPC codes in one table; the token is unwrapped only when the client is built and is
never logged.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable

from huggingface_hub import InferenceClient, InferenceTimeoutError
from huggingface_hub.errors import HfHubHTTPError

from services.common.errors import (
    ChorusError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from services.image.backends import HfInferenceSettings
from services.image.backends.base import Event, Image, ImageRequest, Progress
from services.image.models import KNOWN_MODELS, ModelDefaults

log = logging.getLogger(__name__)


class HfInferenceBackend:
    name = "hf-inference"

    def __init__(self, model_id: str, api: HfInferenceSettings) -> None:
        """Build the client for ``api`` (its token read here, by ``ApiSettings.api_key``); no
        request is made, so an API that is down shows up per call, as UNAVAILABLE."""
        self.model_id = model_id
        # The API cannot be asked for a model's size or steps: known models' values, else none
        # (the service's settings and fallback decide).
        self.native = KNOWN_MODELS.get(model_id, ModelDefaults())
        url = api.base_url.rstrip("/")
        self._url = url if api.endpoint_is_model_url else f"{url}/models/{model_id}"
        token = api.api_key()
        self.description = f"{model_id} on the Hugging Face inference API at {self._url}"
        # A URL as the model makes the client post there directly (no hub lookups), which is how
        # both the public router and dedicated Inference Endpoints are reached.
        self._client = InferenceClient(
            model=self._url,
            provider="hf-inference",
            # None: the hub library's own lookup (HF_TOKEN, or the token saved by `hf auth login`).
            token=token.get_secret_value() if token is not None else None,
            timeout=api.timeout_seconds,
        )
        log.info("hf-inference backend: model %s at %s", model_id, self._url)

    def generate(
        self, request: ImageRequest, emit: Callable[[Event], None], cancelled: threading.Event
    ) -> int:
        drawn = 0
        for index, seed in enumerate(request.seeds):
            if cancelled.is_set():
                break
            try:
                picture = self._client.text_to_image(
                    request.prompt,
                    negative_prompt=request.negative_prompt or None,
                    width=request.width,
                    height=request.height,
                    num_inference_steps=request.steps,
                    guidance_scale=request.guidance_scale,
                    seed=seed,
                )
            except InferenceTimeoutError:
                raise DeadlineExceeded("the Hugging Face inference API timed out") from None
            except HfHubHTTPError as exc:
                raise _map_error(exc) from None
            emit(Progress(request.steps, request.steps))
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            emit(Image(buffer.getvalue(), picture.width, picture.height, seed, index))
            drawn += 1
        return drawn


def _server_message(exc: HfHubHTTPError) -> str:
    try:
        body = json.loads(exc.response.text)
    except (ValueError, AttributeError):
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, list):
        error = "; ".join(map(str, error))
    return str(error or "")


def _map_error(exc: HfHubHTTPError) -> ChorusError:
    """One table from the API's HTTP statuses to Chorus's errors."""
    status = exc.response.status_code if exc.response is not None else 0
    said = _server_message(exc)
    detail = f"Hugging Face inference API ({status}): {said or 'no details'}"
    if status == 401:
        return Unauthenticated("the Hugging Face inference API refused the token (401)")
    if status == 403:
        return PermissionDenied(detail)
    if status == 404:
        return NotFound(detail, field="model")
    if status == 429:
        return Overloaded(detail)
    if status in (400, 422):
        return InvalidArgument(detail)
    if status == 503:
        try:
            wait = float(json.loads(exc.response.text).get("estimated_time", 0))
        except (ValueError, AttributeError, TypeError):
            wait = 0.0
        hint = f"; retry in about {wait:.0f} s" if wait else ""
        return Unavailable(f"{detail}{hint}")
    log.warning("Hugging Face inference API failed with status %s: %s", status, said)
    return Unavailable(detail)
