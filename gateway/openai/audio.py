"""``/v1/audio``: transcriptions and translations (the STT service), speech (the TTS service)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial

from chorus.v1 import common_pb2, stt_pb2, tts_pb2
from flask import Blueprint, Response, jsonify, request, stream_with_context

from gateway.capacity import admit_stream
from gateway.context import call_options, settings_of, stubs_of
from gateway.errors import SERVICE_ERRORS, bad_request, from_rpc_error
from gateway.formats import srt, streaming_wav_header, strip_id3v2, vtt
from gateway.openai.common import call, model_id, speech_model, started
from gateway.openapi import BINARY, TEXT, documented
from gateway.parsing import check_text, form_fields, json_body, require_type, validate
from gateway.responses import (
    DurationUsage,
    Transcription,
    TranscriptionSegment,
    TranscriptionWord,
)
from gateway.schemas import SpeechRequest, TranscriptionForm, TranscriptionUpload
from gateway.streams import End

__all__ = ["OPENAI_PCM_RATE", "SPEECH_MIME", "blueprint"]

log = logging.getLogger(__name__)
blueprint = Blueprint("audio", __name__, url_prefix="/audio")

SPEECH_MIME = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "flac": "audio/flac",
}
OPENAI_PCM_RATE = 24_000
"""OpenAI's ``pcm`` is 16-bit mono at 24 kHz; clients play it at that rate."""

_documented_transcript = partial(
    documented,
    tag="audio",
    answer=(Transcription, "The transcript (json, verbose_json); srt, text and vtt as text"),
    media={"text/plain": TEXT, "text/vtt": TEXT},
    form=TranscriptionUpload,
)


def _transcription(task: stt_pb2.Task) -> Response:
    require_type("multipart/form-data")
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
    answer: stt_pb2.TranscribeResponse = call(
        stubs_of().stt.Transcribe,
        stt_pb2.TranscribeRequest(
            audio=audio,
            language=form.language if task == stt_pb2.TASK_TRANSCRIBE else "",
            word_timestamps=words,
            initial_prompt=form.prompt,
            model=model_id(form.model),
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
    usage = DurationUsage(type="duration", seconds=round(answer.duration_seconds, 3))
    text = answer.text.strip()
    if not verbose:
        return jsonify(Transcription(text=text, usage=usage).body())
    body = Transcription(
        task="translate" if task == stt_pb2.TASK_TRANSLATE else "transcribe",
        language=answer.language,
        duration=answer.duration_seconds,
        text=text,
        segments=[
            TranscriptionSegment(
                id=s.id,
                seek=0,
                start=s.start,
                end=s.end,
                text=s.text,
                tokens=[],
                temperature=form.temperature,
                avg_logprob=s.avg_logprob,
                compression_ratio=0.0,
                no_speech_prob=s.no_speech_prob,
            )
            for s in answer.segments
        ],
        usage=usage,
    )
    if words:
        body.words = [
            TranscriptionWord(word=w.word.strip(), start=w.start, end=w.end)
            for s in answer.segments
            for w in s.words
        ]
    return jsonify(body.body())


@blueprint.post("/transcriptions")
@_documented_transcript("createTranscription")
def transcriptions() -> Response:
    """Transcribe audio

    Whisper's transcribe task, in the language given or detected.
    """
    return _transcription(stt_pb2.TASK_TRANSCRIBE)


@blueprint.post("/translations")
@_documented_transcript("createTranslation")
def translations() -> Response:
    """Translate speech into English text

    Speech in any language to English text (Whisper's translate task).
    """
    return _transcription(stt_pb2.TASK_TRANSLATE)


@blueprint.post("/speech")
@documented(
    "createSpeech",
    "audio",
    (None, "The speech in response_format, streamed as it is synthesized"),
    media=dict.fromkeys(SPEECH_MIME.values(), BINARY),
    errors=(*SERVICE_ERRORS, 502),
    json=SpeechRequest,
)
def speech() -> Response:
    """Synthesize speech, streamed by sentence

    ``wav`` and ``pcm`` stream raw PCM (``wav`` behind one header of unknown length, ``pcm`` at
    24 kHz), ``mp3`` and ``opus`` stream one complete file per sentence back to back (MP3 frames
    and chained Ogg streams play straight through), ``flac`` is synthesized whole (FLAC files do
    not chain).
    """
    settings = settings_of()
    body = validate(SpeechRequest, json_body())
    speech_model(body.model)
    check_text(body.input, settings.max_text_chars, "input")
    voice = settings.voice_aliases.get(body.voice, body.voice)
    fmt = body.response_format
    mime = SPEECH_MIME[fmt]
    tts = stubs_of().tts
    if fmt == "flac":
        whole = call(
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
    admit_stream()
    stream_call = tts.StreamingSynthesize(
        tts_pb2.SynthesizeRequest(
            text=body.input,
            voice=voice,
            speed=body.speed,
            encoding=encoding,
            sample_rate_hz=OPENAI_PCM_RATE if fmt == "pcm" else 0,
        ),
        **call_options(),
    )
    pump, first = started(stream_call, "text-to-speech")

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
