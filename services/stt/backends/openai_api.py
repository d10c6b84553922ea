"""Speech-to-text through any OpenAI-compatible transcription API, with the official client.

The servicer has already decoded and bounded the audio, so what goes out is always a 16 kHz mono
WAV: the remote never sees a container it might not know, and the local limits (bytes, seconds,
languages, prompt length) answer before any request is made. The WAV holds the very float32
samples the local engines are given (IEEE float, lossless), so a remote running the same model
answers as the local backend does. A 16-bit copy (truncated, as it used to be) moved whisper-base's
detection of an espeak German clip from p(de) 0.52 / p(en) 0.35 to 0.43 / 0.41 on one machine,
and to English on another. Only audio too long for OpenAI's 25 MB upload limit as float (over
409 s) goes as 16-bit PCM, rounded to the nearest step. ``verbose_json`` carries segments and,
when asked for, words; they are mapped onto the same dataclasses the local engines fill.

The remote's failures become Chorus errors here (one table, ``remote_error``), so callers get
the same status codes whichever backend runs. The API key is handed to the client and never put
in a message or a log line; a remote that echoes it back has it redacted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import openai
from openai.types.audio import TranscriptionVerbose, TranslationVerbose

from services.common.audio import wav_bytes, wav_header
from services.common.openai_errors import remote_error
from services.stt.backends.base import Segment, TranscribeOptions, Transcription, Word
from services.stt.languages import WHISPER_LANGUAGES, language_code

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
UPLOAD_LIMIT_BYTES = 25 * 1024 * 1024
"""OpenAI's limit on one uploaded file; float32 WAV (64 kB a second) is sent while it fits."""


class OpenAIApiBackend:
    """``SpeechToTextBackend`` that sends audio to ``/audio/transcriptions`` (or
    ``/audio/translations`` for the translate task) of an OpenAI-compatible API."""

    name = "openai-api"
    partial_results = False

    def __init__(
        self,
        model_id: str,
        base_url: str,
        api_key: str | None,
        timeout: float = 60.0,
        max_retries: int = 2,
        languages: Iterable[str] | None = None,
    ) -> None:
        """Build the client; no request is made (a remote that is down shows up per call, as
        UNAVAILABLE, instead of keeping the service from starting).

        Args:
            model_id: the remote's model name, sent as ``model`` (``whisper-1`` at OpenAI).
            base_url: the API root, e.g. ``https://api.openai.com/v1``.
            api_key: sent as a bearer token; None for a remote that wants none.
            timeout: seconds for one request, connecting included.
            max_retries: the client's own retries (connection errors, 408, 409, 429, 5xx).
            languages: ISO 639-1 codes the remote accepts; None: Whisper's.
        """
        self.model_id = model_id
        self._secret = api_key or ""
        self._client = openai.OpenAI(
            base_url=base_url,
            # The client insists on a key; a remote without auth ignores this placeholder.
            api_key=api_key or "unused",
            timeout=timeout,
            max_retries=max_retries,
        )
        self._languages = sorted(languages) if languages is not None else sorted(WHISPER_LANGUAGES)
        self.multilingual = self._languages != ["en"]
        log.info("STT through %s, model %s", base_url, model_id)

    def languages(self) -> list[str]:
        return list(self._languages)

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcription:
        file = ("audio.wav", _wav(audio), "audio/wav")
        result: TranscriptionVerbose | TranslationVerbose
        try:
            if options.task == "translate":
                # The translations endpoint takes no language and no timestamp granularities.
                result = self._client.audio.translations.create(
                    file=file,
                    model=self.model_id,
                    prompt=options.initial_prompt or openai.omit,
                    response_format="verbose_json",
                    temperature=0.0,
                )
            else:
                granularities: list[Any] = (
                    ["segment", "word"] if options.word_timestamps else ["segment"]
                )
                result = self._client.audio.transcriptions.create(
                    file=file,
                    model=self.model_id,
                    language=options.language or openai.omit,
                    prompt=options.initial_prompt or openai.omit,
                    response_format="verbose_json",
                    timestamp_granularities=granularities,
                    temperature=0.0,
                )
        except openai.OpenAIError as exc:
            raise remote_error(exc, self._secret, "transcription API") from None
        return _transcription(result, options, len(audio) / SAMPLE_RATE)


def _transcription(result: Any, options: TranscribeOptions, duration: float) -> Transcription:
    extra = result.model_extra or {}
    words = [
        Word(
            w.word.strip(),
            float(w.start),
            float(w.end),
            float((w.model_extra or {}).get("probability", 0.0)),
        )
        for w in (getattr(result, "words", None) or ())
    ]
    remote_segments = getattr(result, "segments", None) or ()
    segments: list[Segment] = []
    for index, s in enumerate(remote_segments):
        last = index == len(remote_segments) - 1
        inside = tuple(
            w for w in words if s.start <= w.start < s.end or (last and w.start >= s.start)
        )
        segments.append(
            Segment(
                id=index,
                start=float(s.start),
                end=float(s.end),
                text=s.text.strip(),
                words=inside if options.word_timestamps else (),
                avg_logprob=float(s.avg_logprob),
                no_speech_prob=float(s.no_speech_prob),
            )
        )
    text = (result.text or "").strip()
    if not segments and text:
        segments.append(
            Segment(0, 0.0, duration, text, tuple(words) if options.word_timestamps else ())
        )
    if options.language:
        language, probability = options.language, 1.0
    else:
        language = language_code(getattr(result, "language", "") or "")
        # OpenAI does not report the detection's probability; some compatible servers do.
        probability = float(extra.get("language_probability", 1.0))
    return Transcription(
        text=text,
        language=language,
        language_probability=probability,
        duration=duration,
        segments=tuple(segments),
    )


def _wav(audio: np.ndarray, limit: int = UPLOAD_LIMIT_BYTES) -> bytes:
    """``audio`` as a mono WAV at ``SAMPLE_RATE``: 32-bit float, exactly these samples, when it
    fits in ``limit`` bytes; else 16-bit PCM rounded to the nearest step (half the size)."""
    as_float = len(wav_header(SAMPLE_RATE, 0, float32=True)) + 4 * audio.size <= limit
    return wav_bytes(audio.astype(np.float32, copy=False), SAMPLE_RATE, float32=as_float)
