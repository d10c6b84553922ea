"""Coqui TTS (``coqui-tts``) backend.

Coqui is optional and heavy (torch, transformers), so ``TTS`` is imported
inside the constructor: importing this module never requires Coqui.

Speed handling, in order of preference:

* models whose ``inference`` takes ``speed`` (XTTS) get it passed through;
* models with a ``length_scale`` attribute (VITS, Glow-TTS, FastPitch/
  ForwardTTS, AlignTTS) get ``length_scale = base / speed`` for the call,
  which is how Coqui itself scales durations;
* anything else (Tacotron, Bark, Tortoise, ...) ignores ``speed``: no
  time-stretching is done here.
"""

from __future__ import annotations

import inspect
import os
import threading

import numpy as np

from services.common.audio import float_to_pcm16

from .base import VoiceInfo


class CoquiBackend:
    """One loaded Coqui model exposed as one voice, or one voice per speaker."""

    name = "coqui"

    def __init__(
        self,
        model_path: str,
        config_path: str | None,
        voice_id: str = "coqui-default",
        language: str = "en",
        device: str = "cpu",
    ) -> None:
        """Load a local checkpoint, or a Coqui catalogue name.

        ``model_path`` is taken as a model *name* (e.g.
        ``tts_models/en/ljspeech/vits``, downloaded by Coqui on first use)
        only when it is not an existing path and no ``config_path`` is given;
        a local checkpoint always needs its ``config.json``.
        """
        from TTS.api import TTS

        if config_path is None and not os.path.exists(model_path):
            tts = TTS(model_name=model_path, progress_bar=False)
        else:
            tts = TTS(model_path=model_path, config_path=config_path, progress_bar=False)
        self._tts = tts.to(device)
        self._voice_id = voice_id
        self._language = language
        self._sample_rate = int(self._tts.synthesizer.output_sample_rate)
        self._speakers: list[str] = (
            list(self._tts.speakers or []) if self._tts.is_multi_speaker else []
        )
        model = self._tts.synthesizer.tts_model
        self._speed_kwarg = "speed" in inspect.signature(model.inference).parameters
        self._base_length_scale = getattr(model, "length_scale", None)
        # Torch modules are not re-entrant and length_scale is mutated per call,
        # so concurrent gRPC requests are serialised on this model.
        self._lock = threading.Lock()

    def voices(self) -> list[VoiceInfo]:
        """``voice_id`` for single-speaker models, ``voice_id:speaker`` otherwise."""
        ids = [f"{self._voice_id}:{s}" for s in self._speakers] or [self._voice_id]
        return [
            VoiceInfo(
                id=i,
                name=i,
                language=self._language,
                sample_rate_hz=self._sample_rate,
                backend=self.name,
            )
            for i in ids
        ]

    def synthesize(self, text: str, voice: str, speed: float) -> tuple[np.ndarray, int]:
        """Speak ``text``; returns mono int16 samples at the model's rate.

        Samples are clipped, not peak-normalised, so loudness stays
        consistent between utterances of one stream.
        """
        if not text.strip():
            return np.zeros(0, dtype=np.int16), self._sample_rate
        kwargs: dict[str, object] = {}
        if self._speakers:
            prefix = f"{self._voice_id}:"
            kwargs["speaker"] = (
                voice[len(prefix) :] if voice.startswith(prefix) else self._speakers[0]
            )
        if self._tts.is_multi_lingual:
            kwargs["language"] = self._language
        speed = speed if speed and speed > 0 else 1.0
        model = self._tts.synthesizer.tts_model
        with self._lock:
            if self._speed_kwarg:
                kwargs["speed"] = speed
            elif isinstance(self._base_length_scale, (int, float)):
                model.length_scale = self._base_length_scale / speed
            try:
                wav = self._tts.tts(text, **kwargs)
            finally:
                if isinstance(self._base_length_scale, (int, float)):
                    model.length_scale = self._base_length_scale
        return float_to_pcm16(np.asarray(wav).reshape(-1)), self._sample_rate
