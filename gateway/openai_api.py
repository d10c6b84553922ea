"""OpenAI-compatible endpoints, so existing OpenAI clients work unchanged against Chorus.

Each route is a translation: OpenAI's request shape -> one gRPC call -> OpenAI's response
shape. Model and voice names that OpenAI clients send by default (``whisper-1``, ``tts-1``,
``alloy``, ...) map to the services' defaults through the settings' alias tables.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
from chorus.v1 import common_pb2, image_pb2, llm_pb2, stt_pb2, tts_pb2
from flask import Blueprint, Response, jsonify, request, stream_with_context

from gateway.app import metadata, settings_of, stubs_of
from gateway.errors import ApiError, bad_request, from_rpc_error
from gateway.formats import srt, streaming_wav_header, strip_id3v2, vtt
from gateway.parsing import check_text, form_fields, json_body, validate
from gateway.schemas import ChatCompletionRequest, ImageRequest, SpeechRequest, TranscriptionForm
from gateway.streams import HEARTBEAT, SSE_HEADERS, SSE_HEARTBEAT, End, Pump, sse

log = logging.getLogger(__name__)
blueprint = Blueprint("openai", __name__, url_prefix="/v1")


def _model(name: str | None) -> str:
    """A Chorus model id for an OpenAI model name ("" means the service's default)."""
    name = name or ""
    return settings_of().model_aliases.get(name, name)


def _call(method: Any, message: Any, service: str) -> Any:
    """A unary call with the gateway's deadline; failures become HTTP errors."""
    try:
        return method(message, timeout=settings_of().call_timeout, metadata=metadata())
    except grpc.RpcError as error:
        raise from_rpc_error(error, service) from None


def _started(call: Any, name: str) -> tuple[Pump, Any]:
    """Start reading a server stream and wait for its first message, so a failure before any
    output (bad field, unknown model, service down) is a proper HTTP status, not a broken stream."""
    pump = Pump(call, name)
    first = pump.get()
    if isinstance(first, End):
        if first.error is not None:
            raise from_rpc_error(first.error, name)
        raise ApiError(502, f"the {name} service returned no output", "empty_response")
    return pump, first


# --- speech to text ---------------------------------------------------------------------------


def _transcription(task: int) -> Response:
    upload = request.files.get("file")
    if upload is None:
        raise bad_request(
            "the 'file' part (multipart/form-data) is required", "file", "missing_file"
        )
    fields = form_fields()
    granularities = fields.get("timestamp_granularities")
    if isinstance(granularities, str):
        fields["timestamp_granularities"] = [granularities]
    form = validate(TranscriptionForm, fields)
    audio = upload.read()
    if not audio:
        raise bad_request("the uploaded file is empty", "file", "empty_file")
    verbose = form.response_format == "verbose_json"
    words = verbose and "word" in form.timestamp_granularities
    answer: stt_pb2.TranscribeResponse = _call(
        stubs_of().stt.Transcribe,
        stt_pb2.TranscribeRequest(
            audio=audio,
            language=form.language if task == stt_pb2.TASK_TRANSCRIBE else "",
            word_timestamps=words,
            initial_prompt=form.prompt,
            model=_model(form.model),
            task=task,
        ),
        "speech-to-text",
    )
    if form.response_format == "text":
        return Response(answer.text.strip() + "\n", mimetype="text/plain")
    if form.response_format == "srt":
        return Response(srt(answer.segments), mimetype="text/plain")
    if form.response_format == "vtt":
        return Response(vtt(answer.segments), mimetype="text/vtt")
    usage = {"type": "duration", "seconds": round(answer.duration_seconds, 3)}
    if not verbose:
        return jsonify({"text": answer.text.strip(), "usage": usage})
    body: dict[str, Any] = {
        "task": "translate" if task == stt_pb2.TASK_TRANSLATE else "transcribe",
        "language": answer.language,
        "duration": answer.duration_seconds,
        "text": answer.text.strip(),
        "segments": [
            {
                "id": s.id,
                "seek": 0,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": [],
                "temperature": form.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": 0.0,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in answer.segments
        ],
        "usage": usage,
    }
    if words:
        body["words"] = [
            {"word": w.word.strip(), "start": w.start, "end": w.end}
            for s in answer.segments
            for w in s.words
        ]
    return jsonify(body)


@blueprint.post("/audio/transcriptions")
def transcriptions() -> Response:
    return _transcription(stt_pb2.TASK_TRANSCRIBE)


@blueprint.post("/audio/translations")
def translations() -> Response:
    """Speech in any language to English text (Whisper's translate task)."""
    return _transcription(stt_pb2.TASK_TRANSLATE)


# --- text to speech ---------------------------------------------------------------------------

_SPEECH_MIME = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "flac": "audio/flac",
}
OPENAI_PCM_RATE = 24_000
"""OpenAI's ``pcm`` is 16-bit mono at 24 kHz; clients play it at that rate."""


@blueprint.post("/audio/speech")
def speech() -> Response:
    """Streams the speech as it is synthesized, sentence by sentence.

    ``wav`` and ``pcm`` stream raw PCM (``wav`` behind one header of unknown length), ``mp3``
    and ``opus`` stream one complete file per sentence back to back (MP3 frames and chained Ogg
    streams play straight through), ``flac`` is synthesized whole (FLAC files do not chain).
    """
    body = validate(SpeechRequest, json_body())
    check_text(body.input, settings_of().max_text_chars, "input")
    voice = settings_of().voice_aliases.get(body.voice, body.voice)
    fmt = body.response_format
    mime = _SPEECH_MIME[fmt]
    tts = stubs_of().tts
    if fmt == "flac":
        whole = _call(
            tts.Synthesize,
            tts_pb2.SynthesizeRequest(
                text=body.input,
                voice=voice,
                speed=body.speed,
                encoding=common_pb2.AUDIO_ENCODING_FLAC,
            ),
            "text-to-speech",
        )
        return Response(whole.audio, mimetype=mime)
    encoding = {
        "mp3": common_pb2.AUDIO_ENCODING_MP3,
        "opus": common_pb2.AUDIO_ENCODING_OGG_OPUS,
    }.get(fmt, common_pb2.AUDIO_ENCODING_PCM_S16LE)
    call = tts.StreamingSynthesize(
        tts_pb2.SynthesizeRequest(
            text=body.input,
            voice=voice,
            speed=body.speed,
            encoding=encoding,
            sample_rate_hz=OPENAI_PCM_RATE if fmt == "pcm" else 0,
        ),
        timeout=settings_of().call_timeout,
        metadata=metadata(),
    )
    pump, first = _started(call, "text-to-speech")

    def stream() -> Iterator[bytes]:
        try:
            if fmt == "wav":
                yield streaming_wav_header(first.sample_rate_hz)
            yield first.audio
            for item in pump.messages():
                if isinstance(item, End):
                    if item.error is not None:
                        log.warning(
                            "speech stream failed after it started: %s",
                            from_rpc_error(item.error).message,
                        )
                    return
                yield strip_id3v2(item.audio) if fmt == "mp3" else item.audio
        finally:
            pump.cancel()

    return Response(stream_with_context(stream()), mimetype=mime)


# --- images -----------------------------------------------------------------------------------


@blueprint.post("/images/generations")
def images() -> Response:
    body = validate(ImageRequest, json_body())
    settings = settings_of()
    check_text(body.prompt, settings.max_text_chars, "prompt")
    if body.n > settings.max_images:
        raise ApiError(400, f"n must be at most {settings.max_images}", "invalid_value", "n")
    width = height = 0
    if body.size != "auto":
        width, height = (int(side) for side in body.size.split("x"))
        if not (0 < width <= 4096 and 0 < height <= 4096):
            raise bad_request(
                "size must be WIDTHxHEIGHT with sides from 1 to 4096", "size", "invalid_value"
            )
    message = image_pb2.GenerateImageRequest(
        prompt=body.prompt,
        width=width,
        height=height,
        steps=body.steps,
        num_images=body.n,
        model=_model(body.model),
    )
    if body.seed is not None:
        message.seed = body.seed
    pictures: list[image_pb2.GeneratedImage] = []
    try:
        for event in stubs_of().image.Generate(
            message, timeout=settings.call_timeout, metadata=metadata()
        ):
            if event.WhichOneof("event") == "image":
                pictures.append(event.image)
    except grpc.RpcError as error:
        raise from_rpc_error(error, "image generation") from None
    data = []
    for picture in sorted(pictures, key=lambda p: p.index):
        encoded = base64.b64encode(picture.png).decode()
        item = {"revised_prompt": body.prompt, "seed": picture.seed}
        if body.response_format == "url":
            item["url"] = "data:image/png;base64," + encoded
        else:
            item["b64_json"] = encoded
        data.append(item)
    return jsonify({"created": int(time.time()), "data": data})


# --- chat -------------------------------------------------------------------------------------

_CHAT_ROLES = {
    "system": llm_pb2.CHAT_ROLE_SYSTEM,
    "developer": llm_pb2.CHAT_ROLE_SYSTEM,
    "user": llm_pb2.CHAT_ROLE_USER,
    "assistant": llm_pb2.CHAT_ROLE_ASSISTANT,
}
_FINISH = {llm_pb2.FINISH_REASON_LENGTH: "length"}


def _usage(usage: llm_pb2.TokenUsage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


@blueprint.post("/chat/completions")
def chat_completions() -> Response:
    body = validate(ChatCompletionRequest, json_body())
    settings = settings_of()
    messages = []
    for i, m in enumerate(body.messages):
        content = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)
        check_text(content, settings.max_text_chars, f"messages.{i}.content")
        messages.append(llm_pb2.ChatMessage(role=_CHAT_ROLES[m.role], content=content))
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    message = llm_pb2.GenerateTextRequest(
        messages=messages,
        max_tokens=body.max_completion_tokens or body.max_tokens or 0,
        stop=stop,
        model=_model(body.model),
    )
    for name in ("temperature", "top_p", "seed"):
        if getattr(body, name) is not None:
            setattr(message, name, getattr(body, name))
    completion_id = "chatcmpl-" + uuid.uuid4().hex
    created = int(time.time())
    call = stubs_of().llm.Generate(message, timeout=settings.call_timeout, metadata=metadata())

    if not body.stream:
        try:
            result = next(e.result for e in call if e.WhichOneof("event") == "result")
        except grpc.RpcError as error:
            raise from_rpc_error(error, "text generation") from None
        except StopIteration:
            raise ApiError(502, "the language model returned no result", "empty_response") from None
        return jsonify(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": body.model or result.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": _FINISH.get(result.finish_reason, "stop"),
                    }
                ],
                "usage": _usage(result.usage),
            }
        )

    pump, first = _started(call, "text generation")
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(delta: dict[str, Any], finish: str | None = None, model: str = "") -> str:
        return sse(
            None,
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.model or model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            },
        )

    def stream() -> Iterator[str]:
        try:
            yield chunk({"role": "assistant", "content": ""})
            item = first
            items = pump.messages(settings.heartbeat_seconds)
            while True:
                if item is HEARTBEAT:
                    yield SSE_HEARTBEAT
                elif isinstance(item, End):
                    if item.error is not None:
                        yield sse(None, from_rpc_error(item.error, "text generation").body())
                    break
                elif item.WhichOneof("event") == "delta":
                    if item.delta.text:
                        yield chunk({"content": item.delta.text})
                else:
                    result = item.result
                    yield chunk({}, _FINISH.get(result.finish_reason, "stop"), result.model)
                    if include_usage:
                        yield sse(
                            None,
                            {
                                "id": completion_id,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": body.model or result.model,
                                "choices": [],
                                "usage": _usage(result.usage),
                            },
                        )
                item = next(items)
            yield sse(None, "[DONE]")
        finally:
            pump.cancel()

    return Response(
        stream_with_context(stream()), mimetype="text/event-stream", headers=SSE_HEADERS
    )


# --- models -----------------------------------------------------------------------------------


@blueprint.get("/models")
def models() -> Response:
    """Every model the STT, LLM and image services offer, and the TTS voices, in OpenAI's list
    shape; a service that does not answer is left out (503 when none answers)."""
    stubs = stubs_of()
    timeout = settings_of().ready_timeout * 5
    data: list[dict[str, Any]] = []
    answered = 0
    for kind, method in (
        ("stt", stubs.stt.ListModels),
        ("llm", stubs.llm.ListModels),
        ("image", stubs.image.ListModels),
    ):
        try:
            listing = method(common_pb2.ListModelsRequest(), timeout=timeout, metadata=metadata())
        except grpc.RpcError as error:
            log.warning("%s ListModels failed: %s", kind, from_rpc_error(error).message)
            continue
        answered += 1
        data.extend(
            {
                "id": m.id,
                "object": "model",
                "created": 0,
                "owned_by": f"chorus-{kind}",
                "loaded": m.loaded,
            }
            for m in listing.models
        )
    try:
        voices = stubs.tts.ListVoices(
            tts_pb2.ListVoicesRequest(), timeout=timeout, metadata=metadata()
        )
        answered += 1
        data.extend(
            {"id": v.id, "object": "model", "created": 0, "owned_by": "chorus-tts", "loaded": True}
            for v in voices.voices
        )
    except grpc.RpcError as error:
        log.warning("tts ListVoices failed: %s", from_rpc_error(error).message)
    if not answered:
        raise ApiError(503, "no model service answered", "unavailable")
    return jsonify({"object": "list", "data": data})
