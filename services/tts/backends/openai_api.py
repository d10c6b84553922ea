"""Text-to-speech through any OpenAI-compatible speech API, with the official client.

The servicer splits text into sentences and calls ``synthesize`` once per sentence, so each
sentence is one ``/audio/speech`` request whose body is read as it streams in (raw PCM, or a
WAV whose header is parsed on the fly) and turned into the samples the servicer encodes into a
Chorus chunk. Voices cannot be listed through the API, so they come from configuration.

The remote's failures map onto the shared table (``services.common.openai_errors``); the API key
is handed to the client and never logged, and redacted from anything the remote echoes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import httpx2
import numpy as np
import openai

from services.common.audio import resample_pcm16
from services.common.errors import Unavailable
from services.common.openai_errors import remote_error
from services.tts.backends.base import VoiceInfo

log = logging.getLogger(__name__)

_READ_BYTES = 16 * 1024


class OpenAIApiBackend:
    """``TextToSpeechBackend`` for the voices of one remote speech model."""

    name = "openai-api"

    def __init__(
        self,
        model: str,
        voices: Iterable[str],
        base_url: str,
        api_key: str | None,
        *,
        language: str = "en",
        response_format: str = "pcm",
        sample_rate_hz: int = 24_000,
        timeout: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        """Build the client; no request is made here (a remote that is down shows up per call,
        as UNAVAILABLE).

        Args:
            model: the remote's model name (``tts-1`` at OpenAI).
            voices: the remote voice names callers may use.
            base_url: the API root, e.g. ``https://api.openai.com/v1``.
            api_key: sent as a bearer token; None for a remote that wants none.
            language: tag reported for every voice.
            response_format: ``pcm`` (raw 16-bit mono at ``sample_rate_hz``) or ``wav``.
            sample_rate_hz: the voices' rate; WAV at another rate is resampled to it.
            timeout: seconds for one request, connecting included.
            max_retries: the client's own retries (connection errors, 408, 409, 429, 5xx).
        """
        self.model = model
        self._format = response_format
        self._rate = sample_rate_hz
        self._secret = api_key or ""
        self._voices = [
            VoiceInfo(
                id=v, name=v, language=language, sample_rate_hz=sample_rate_hz, backend=self.name
            )
            for v in voices
        ]
        self._client = openai.OpenAI(
            base_url=base_url,
            # The client insists on a key; a remote without auth ignores this placeholder.
            api_key=api_key or "unused",
            timeout=timeout,
            max_retries=max_retries,
        )
        log.info("TTS through %s, model %s", base_url, model)

    def voices(self) -> list[VoiceInfo]:
        return list(self._voices)

    def synthesize(self, text: str, voice: str, speed: float) -> tuple[np.ndarray, int]:
        try:
            with self._client.audio.speech.with_streaming_response.create(
                model=self.model,
                voice=voice,
                input=text,
                speed=speed,
                response_format=self._format,  # type: ignore[arg-type]
            ) as response:
                body = response.iter_bytes(_READ_BYTES)
                if self._format == "wav":
                    samples, rate = _read_wav_stream(body)
                else:
                    samples, rate = _pcm16(b"".join(body)), self._rate
        except openai.OpenAIError as exc:
            raise remote_error(exc, self._secret, "speech API") from None
        except httpx2.TransportError as exc:  # the body broke off while streaming in
            raise Unavailable(f"the speech API's answer broke off: {type(exc).__name__}") from None
        return resample_pcm16(samples, rate, self._rate), self._rate


def _pcm16(data: bytes) -> np.ndarray:
    usable = len(data) - len(data) % 2
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)


def _read_wav_stream(chunks: Iterator[bytes]) -> tuple[np.ndarray, int]:
    """Samples and rate of a streamed 16-bit PCM WAV. Streaming writers put 0 or 0xFFFFFFFF in
    the size fields, so the header's chunks are walked and the sizes of ``data`` ignored."""
    buffer = b""
    rate = channels = 0
    position = 12
    for chunk in chunks:
        buffer += chunk
        if len(buffer) < 12:
            continue
        if buffer[:4] != b"RIFF" or buffer[8:12] != b"WAVE":
            raise Unavailable("the speech API answered something that is not a WAV file")
        while position + 8 <= len(buffer):
            kind = buffer[position : position + 4]
            size = int.from_bytes(buffer[position + 4 : position + 8], "little")
            if kind == b"data":
                if not rate:
                    raise Unavailable("the speech API's WAV has no fmt chunk before its data")
                rest = buffer[position + 8 :] + b"".join(chunks)
                samples = _pcm16(rest)
                if channels > 1:
                    usable = len(samples) - len(samples) % channels
                    samples = np.rint(samples[:usable].reshape(-1, channels).mean(axis=1))
                    samples = samples.astype(np.int16)
                return samples, rate
            if position + 8 + size > len(buffer):
                break  # the rest of this header chunk has not arrived yet
            if kind == b"fmt ":
                fmt = buffer[position + 8 : position + 8 + size]
                channels = int.from_bytes(fmt[2:4], "little")
                rate = int.from_bytes(fmt[4:8], "little")
                if (
                    int.from_bytes(fmt[0:2], "little") != 1
                    or int.from_bytes(fmt[14:16], "little") != 16
                ):
                    raise Unavailable("the speech API's WAV is not 16-bit PCM")
            position += 8 + size + (size & 1)
    raise Unavailable("the speech API's WAV ended before its audio data")
