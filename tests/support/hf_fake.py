"""A loopback HTTP server speaking the Hugging Face inference API's text-to-image wire protocol.

What the real ``huggingface_hub.InferenceClient.text_to_image`` sends and expects:
``POST /models/<model id>`` with ``Authorization: Bearer <token>``, ``Accept: image/png`` and a
JSON body ``{"inputs": <prompt>, "parameters": {"width", "height", "num_inference_steps",
"guidance_scale", "negative_prompt", "seed", ...}}``; the answer is the image's bytes. Errors are
the API's JSON bodies: 401 ``{"error": "Invalid credentials in Authorization header"}``, 429
``{"error": "Rate limit reached. ..."}``, 503 ``{"error": "Model <id> is currently loading",
"estimated_time": <s>}``.

Behaviour is chosen by the model id (so one server covers every case): ``<ns>/loading`` answers
503, ``<ns>/rate-limited`` answers 429, any other model draws a flat-coloured PNG of the asked
size whose colour depends on the prompt and seed only (same request, same bytes).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

VALID_TOKEN = "hf_loopbackTestTokenNotARealOne0123456789"


@dataclass
class FakeHfInference:
    url: str
    requests: list[dict] = field(default_factory=list)
    """Every request received: {"path", "auth", "accept", "body"}."""


def _png(width: int, height: int, prompt: str, seed: int | None) -> bytes:
    digest = hashlib.sha256(f"{prompt}|{seed}".encode()).digest()
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), tuple(digest[:3])).save(buffer, format="PNG")
    return buffer.getvalue()


def _handler(state: FakeHfInference) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet test output
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, payload: dict) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"raw": raw.decode(errors="replace")}
            auth = self.headers.get("Authorization", "")
            state.requests.append(
                {
                    "path": self.path,
                    "auth": auth,
                    "accept": self.headers.get("Accept"),
                    "body": body,
                }
            )
            if not self.path.startswith("/models/"):
                return self._error(404, {"error": "Not Found"})
            model = self.path[len("/models/") :]
            if auth != f"Bearer {VALID_TOKEN}":
                return self._error(401, {"error": "Invalid credentials in Authorization header"})
            if model.endswith("/loading"):
                return self._error(
                    503, {"error": f"Model {model} is currently loading", "estimated_time": 20.0}
                )
            if model.endswith("/rate-limited"):
                return self._error(
                    429,
                    {
                        "error": "Rate limit reached. You reached free usage limit (reset hourly)."
                        " Please subscribe to a plan at https://huggingface.co/pricing to use the"
                        " API at this rate"
                    },
                )
            prompt = body.get("inputs")
            params = body.get("parameters") or {}
            if not isinstance(prompt, str) or not prompt:
                return self._error(400, {"error": "inputs must be a non-empty string"})
            png = _png(
                int(params.get("width") or 512),
                int(params.get("height") or 512),
                prompt,
                params.get("seed"),
            )
            self._send(200, png, "image/png")

    return Handler


@contextmanager
def fake_hf_inference() -> Iterator[FakeHfInference]:
    """Serve the fake API on 127.0.0.1 (a free port) for the duration of the block."""
    state = FakeHfInference("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-hf", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
