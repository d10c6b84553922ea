"""The browser's endpoints: one conversational turn as Server-Sent Events, and the voices."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import grpc
from chorus.v1 import common_pb2, llm_pb2, orchestrator_pb2, tts_pb2
from flask import Blueprint, Response, jsonify, request, stream_with_context
from google.protobuf.json_format import MessageToDict

from gateway.capacity import admit_stream
from gateway.context import call_options, settings_of, state_of, stubs_of
from gateway.errors import ApiError, bad_request, event_error, from_rpc_error
from gateway.openapi import TEXT, documented
from gateway.parsing import json_body, validate
from gateway.responses import ClientConfig, Voice, VoiceList
from gateway.schemas import TextTurnRequest, TurnOptions, TurnUpload, VoicesQuery
from gateway.streams import HEARTBEAT, SSE_HEADERS, SSE_HEARTBEAT, End, Pump, sse

log = logging.getLogger(__name__)
blueprint = Blueprint("turns", __name__)

AUDIO_CHUNK_BYTES = 64 * 1024
_ROLES = {
    "system": llm_pb2.CHAT_ROLE_SYSTEM,
    "user": llm_pb2.CHAT_ROLE_USER,
    "assistant": llm_pb2.CHAT_ROLE_ASSISTANT,
}
_IMAGE_MODES = {
    "off": orchestrator_pb2.IMAGE_MODE_OFF,
    "on": orchestrator_pb2.IMAGE_MODE_ON,
    "auto": orchestrator_pb2.IMAGE_MODE_AUTO,
}
ENCODINGS = {
    "wav": common_pb2.AUDIO_ENCODING_WAV,
    "mp3": common_pb2.AUDIO_ENCODING_MP3,
    "opus": common_pb2.AUDIO_ENCODING_OGG_OPUS,
    "flac": common_pb2.AUDIO_ENCODING_FLAC,
    "pcm": common_pb2.AUDIO_ENCODING_PCM_S16LE,
}


def turn_config(options: TurnOptions, speech: bool) -> orchestrator_pb2.TurnConfig:
    overflow = settings_of().turn_limits.history_overflow([m.content for m in options.history])
    if overflow is not None:
        raise ApiError(400, overflow.message, overflow.code, "history")
    turn_options = orchestrator_pb2.TurnOptions(
        system_prompt=options.system_prompt,
        max_tokens=options.max_tokens,
        text_only=options.text_only,
        image_width=options.image_width,
        image_height=options.image_height,
        image_steps=options.image_steps,
    )
    if options.temperature is not None:
        turn_options.temperature = options.temperature
    if options.seed is not None:
        turn_options.seed = options.seed
    if options.image_seed is not None:
        turn_options.image_seed = options.image_seed
    if options.conversation_id and options.history:
        raise bad_request(
            "give history or conversation_id, not both: a stored conversation's history is "
            "read from the store",
            "history",
        )
    return orchestrator_pb2.TurnConfig(
        conversation_id=options.conversation_id,
        history=[
            llm_pb2.ChatMessage(role=_ROLES[m.role], content=m.content) for m in options.history
        ],
        input_mode=orchestrator_pb2.INPUT_MODE_SPEECH
        if speech
        else orchestrator_pb2.INPUT_MODE_TEXT,
        language=options.language,
        voice=options.voice,
        output_encoding=ENCODINGS[options.audio_format],
        image_mode=_IMAGE_MODES[options.image_mode],
        options=turn_options,
    )


def _requests() -> list[orchestrator_pb2.ConverseRequest]:
    """The Converse request messages for this HTTP request (text JSON or multipart audio)."""
    settings = settings_of()
    Req = orchestrator_pb2.ConverseRequest
    end = Req(end_of_input=orchestrator_pb2.EndOfInput())
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("audio") or request.files.get("file")
        if upload is None:
            raise bad_request("a speech turn needs an 'audio' file part", "audio", "missing_file")
        raw = request.form.get("options", "{}")
        try:
            data = json.loads(raw or "{}")
        except ValueError:
            raise bad_request("'options' is not valid JSON", "options", "invalid_json") from None
        options = validate(TurnOptions, data)
        audio = upload.read()
        if not audio:
            raise bad_request("the 'audio' file is empty", "audio", "empty_file")
        chunks = [
            Req(audio=audio[i : i + AUDIO_CHUNK_BYTES])
            for i in range(0, len(audio), AUDIO_CHUNK_BYTES)
        ]
        return [Req(config=turn_config(options, speech=True)), *chunks, end]
    turn = validate(TextTurnRequest, json_body())
    overflow = settings.turn_limits.text_overflow(turn.text)
    if overflow is not None:
        raise ApiError(400, overflow.message, overflow.code, "text")
    return [Req(config=turn_config(turn, speech=False)), Req(text=turn.text), end]


def event_payload(event: orchestrator_pb2.TurnEvent) -> tuple[str, dict[str, Any]]:
    """(SSE event name, JSON payload) of a TurnEvent; bytes become base64 strings
    (``audio_chunk.audio``: one playable file per sentence; ``image_result.png``)."""
    kind = event.WhichOneof("event") or "unknown"
    payload = (
        MessageToDict(
            getattr(event, kind),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        if kind != "unknown"
        else {}
    )
    payload["turn_id"] = event.turn_id
    payload["elapsed_seconds"] = round(event.elapsed_seconds, 4)
    return kind, payload


@blueprint.post("/api/turns")
@documented(
    "createTurn",
    "browser",
    (None, "The turn's events as Server-Sent Events"),
    events=TEXT,
    json=TextTurnRequest,
    form=TurnUpload,
)
def post_turn() -> Response:
    """One conversational turn, streamed as Server-Sent Events

    Text as JSON, or speech as multipart (``audio``: WebM/Opus, WAV, ...; ``options``:
    TurnOptions as JSON). Events: transcript_partial, transcript_final, reply_delta,
    reply_final, image_progress, image_result (png base64), audio_chunk (audio base64: one
    playable file per sentence), turn_timings, error, done. Closing the connection cancels the
    turn.
    """
    admit_stream()
    settings = settings_of()
    messages = _requests()
    call = stubs_of().orchestrator.Converse(iter(messages), **call_options(settings.turn_timeout))
    pump = Pump(call, "turn")
    first = pump.get()
    if isinstance(first, End):
        raise (
            from_rpc_error(first.error, "orchestrator")
            if first.error
            else ApiError(502, "the orchestrator ended the turn without any event", "empty_turn")
        )
    if first.WhichOneof("event") == "error" and first.error.fatal:
        pump.cancel("its first event was a fatal error")
        raise event_error(first.error)

    def stream() -> Iterator[str]:
        fatal_sent = False
        try:
            yield sse(*event_payload(first))
            for item in pump.messages(settings.heartbeat_seconds):
                if item is HEARTBEAT:
                    yield SSE_HEARTBEAT
                elif isinstance(item, End):
                    if item.error is not None and not fatal_sent:
                        error = from_rpc_error(item.error, "orchestrator")
                        yield sse(
                            "error",
                            {
                                "stage": "STAGE_UNSPECIFIED",
                                "code": item.error.code().name
                                if isinstance(item.error, grpc.Call)
                                else "UNKNOWN",
                                "message": error.message,
                                "fatal": True,
                                "retry_after_seconds": error.retry_after or 0.0,
                                "http_status": error.status,
                            },
                        )
                    yield sse("done", {"turn_id": first.turn_id})
                else:
                    kind, payload = event_payload(item)
                    if kind == "error" and item.error.fatal:
                        fatal_sent = True
                        payload["http_status"] = event_error(item.error).status
                    yield sse(kind, payload)
        finally:
            pump.cancel()  # no-op when the turn ended; cancels it when the client went away

    return Response(
        stream_with_context(stream()), mimetype="text/event-stream", headers=SSE_HEADERS
    )


@blueprint.get("/api/voices")
@documented("listVoices", "browser", VoiceList, query=VoicesQuery)
def voices() -> Response:
    """Voices of the TTS service"""
    language = request.args.get("language", "")
    if len(language) > 35:
        raise bad_request("language is too long", "language")
    try:
        answer = stubs_of().tts.ListVoices(
            tts_pb2.ListVoicesRequest(language=language), **call_options()
        )
    except grpc.RpcError as error:
        raise from_rpc_error(error, "text-to-speech") from None
    listed = [
        Voice.model_validate(
            MessageToDict(
                v, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
        )
        for v in answer.voices
    ]
    return jsonify(VoiceList(voices=listed).body())


@blueprint.get("/api/config")
@documented("getConfig", "browser", ClientConfig, errors=())
def config() -> Response:
    """Limits the browser applies before sending (the gateway enforces them anyway): the
    orchestrator's turn limits, and the gateway's own upload limit. And ``notices``: one line
    for the user per service whose default model is a placeholder (``gateway/notices.py``;
    asked with a short deadline, kept a few seconds; a service that does not answer adds none)."""
    state = state_of()
    settings = state.settings
    notices = state.notices.get(state.channels.stubs(), settings.ready_timeout)
    return jsonify(
        {
            **settings.turn_limits.model_dump(),
            "max_upload_bytes": settings.max_upload_bytes,
            "notices": [notice.body() for notice in notices],
        }
    )
