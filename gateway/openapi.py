"""The OpenAPI 3.1 document of the HTTP API, served at ``/openapi.json``.

Request schemas come from the pydantic models that validate the requests (schemas.py), so the
document cannot promise what the code refuses; paths and responses are written out here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from gateway.schemas import (
    ChatCompletionRequest,
    ImageRequest,
    SpeechRequest,
    TextTurnRequest,
    TranscriptionForm,
    TurnOptions,
)

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "Invalid input",
        401: "Missing or wrong API key",
        404: "Unknown model or voice",
        413: "Request body too large",
        429: "Over a limit, or the service is busy",
        501: "Not implemented by the backend",
        503: "A service is unavailable",
        504: "Deadline exceeded",
    }
    return {str(c): _json(_ref("Error"), words.get(c, "Error")) for c in codes}


_COMMON = (400, 401, 413, 429, 503, 504)

_OBJECTS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    "Transcription": {
        "type": "object",
        "required": ["text"],
        "properties": {
            "text": {"type": "string"},
            "task": {"type": "string"},
            "language": {"type": "string"},
            "duration": {"type": "number"},
            "segments": {"type": "array", "items": {"type": "object"}},
            "words": {"type": "array", "items": {"type": "object"}},
        },
    },
    "ImagesResponse": {
        "type": "object",
        "required": ["created", "data"],
        "properties": {
            "created": {"type": "integer"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "b64_json": {"type": "string"},
                        "url": {"type": "string"},
                        "revised_prompt": {"type": "string"},
                        "seed": {"type": "integer"},
                    },
                },
            },
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "object", "owned_by"],
                    "properties": {
                        "id": {"type": "string"},
                        "object": {"const": "model"},
                        "created": {"type": "integer"},
                        "owned_by": {"type": "string"},
                    },
                },
            },
        },
    },
    "VoiceList": {
        "type": "object",
        "required": ["voices"],
        "properties": {"voices": {"type": "array", "items": {"type": "object"}}},
    },
    "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
}


def _multipart(file_field: str, form: dict[str, Any], required: list[str]) -> dict[str, Any]:
    properties = {file_field: {"type": "string", "format": "binary"}, **form}
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": required, "properties": properties}
            }
        },
    }


def _json_body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


@cache
def document() -> dict[str, Any]:
    _, generated = models_json_schema(
        [
            (m, "validation")
            for m in (
                TextTurnRequest,
                TurnOptions,
                SpeechRequest,
                ImageRequest,
                ChatCompletionRequest,
                TranscriptionForm,
            )
        ],
        ref_template=_REF,
    )
    schemas = {**generated.get("$defs", {}), **_OBJECTS}
    transcription_form = dict(schemas["TranscriptionForm"]["properties"])
    translation_form = {
        k: v
        for k, v in transcription_form.items()
        if k not in ("language", "timestamp_granularities")
    }
    transcription_responses = {
        "200": {
            "description": "The transcript (json/verbose_json) or subtitles/text (srt, vtt, text)",
            "content": {
                "application/json": {"schema": _ref("Transcription")},
                "text/plain": {"schema": {"type": "string"}},
                "text/vtt": {"schema": {"type": "string"}},
            },
        },
        **_errors(*_COMMON, 404),
    }
    audio = {"schema": {"type": "string", "format": "binary"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Chorus gateway",
            "version": "1.0.0",
            "description": (
                "HTTP front of the Chorus gRPC services: conversational turns as Server-Sent "
                "Events for the browser, and OpenAI-compatible endpoints. Errors use OpenAI's "
                "shape; gRPC status codes map to HTTP (INVALID_ARGUMENT 400, UNAUTHENTICATED "
                "401, NOT_FOUND 404, RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, "
                "DEADLINE_EXCEEDED 504)."
            ),
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
        "paths": {
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": _json(_ref("Status"))},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Ready when the orchestrator is SERVING",
                    "security": [],
                    "responses": {
                        "200": _json(_ref("Status")),
                        "503": _json(_ref("Status"), "Not ready"),
                    },
                }
            },
            "/api/turns": {
                "post": {
                    "operationId": "createTurn",
                    "summary": "One conversational turn, streamed as Server-Sent Events",
                    "description": (
                        "Text as JSON, or speech as multipart (`audio`: WebM/Opus, WAV, ...; "
                        "`options`: TurnOptions as JSON). Events: transcript_partial, "
                        "transcript_final, reply_delta, reply_final, image_progress, image_result "
                        "(png base64), audio_chunk (audio base64: one playable file per sentence), "
                        "turn_timings, error, done. Closing the connection cancels the turn."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": _ref("TextTurnRequest")},
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["audio"],
                                    "properties": {
                                        "audio": {"type": "string", "format": "binary"},
                                        "options": {
                                            "type": "string",
                                            "description": "TurnOptions as JSON",
                                        },
                                    },
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The turn's events",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(*_COMMON, 404),
                    },
                }
            },
            "/api/config": {
                "get": {
                    "operationId": "getConfig",
                    "summary": "Limits the browser applies before sending",
                    "responses": {"200": _json({"type": "object"}), **_errors(401)},
                }
            },
            "/api/voices": {
                "get": {
                    "operationId": "listVoices",
                    "summary": "Voices of the TTS service",
                    "parameters": [
                        {
                            "name": "language",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "maxLength": 35},
                        }
                    ],
                    "responses": {"200": _json(_ref("VoiceList")), **_errors(*_COMMON)},
                }
            },
            "/v1/audio/transcriptions": {
                "post": {
                    "operationId": "createTranscription",
                    "summary": "Transcribe audio (OpenAI-compatible)",
                    "requestBody": _multipart("file", transcription_form, ["file"]),
                    "responses": transcription_responses,
                }
            },
            "/v1/audio/translations": {
                "post": {
                    "operationId": "createTranslation",
                    "summary": "Translate speech into English text (OpenAI-compatible)",
                    "requestBody": _multipart("file", translation_form, ["file"]),
                    "responses": transcription_responses,
                }
            },
            "/v1/audio/speech": {
                "post": {
                    "operationId": "createSpeech",
                    "summary": "Synthesize speech, streamed by sentence (OpenAI-compatible)",
                    "requestBody": _json_body("SpeechRequest"),
                    "responses": {
                        "200": {
                            "description": "Audio",
                            "content": {
                                "audio/mpeg": audio,
                                "audio/ogg": audio,
                                "audio/wav": audio,
                                "audio/pcm": audio,
                                "audio/flac": audio,
                            },
                        },
                        **_errors(*_COMMON, 404),
                    },
                }
            },
            "/v1/images/generations": {
                "post": {
                    "operationId": "createImage",
                    "summary": "Generate images (OpenAI-compatible)",
                    "requestBody": _json_body("ImageRequest"),
                    "responses": {"200": _json(_ref("ImagesResponse")), **_errors(*_COMMON, 404)},
                }
            },
            "/v1/chat/completions": {
                "post": {
                    "operationId": "createChatCompletion",
                    "summary": "Chat completion, optionally streamed (OpenAI-compatible)",
                    "requestBody": _json_body("ChatCompletionRequest"),
                    "responses": {
                        "200": {
                            "description": "The completion, or its chunks when stream is true",
                            "content": {
                                "application/json": {"schema": _ref("ChatCompletion")},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(*_COMMON, 404),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "summary": "Models of every service (OpenAI-compatible)",
                    "responses": {"200": _json(_ref("ModelList")), **_errors(401, 503)},
                }
            },
        },
    }
