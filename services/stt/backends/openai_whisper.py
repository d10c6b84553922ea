"""Speech-to-text backend built on the reference ``openai-whisper`` package.

Decoding is pinned to a single temperature (no fallback ladder) and
``condition_on_previous_text=False`` so results are deterministic at
temperature 0 and latency is bounded: the default fallback retries every
temperature and can take several times longer on hard audio.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import whisper
from whisper.tokenizer import get_tokenizer

from services.stt.backends.base import (
    Segment,
    TranscribeOptions,
    Transcription,
    Word,
)

SAMPLE_RATE = whisper.audio.SAMPLE_RATE  # 16 kHz, what the gRPC layer delivers


class OpenAIWhisperBackend:
    """``SpeechToTextBackend`` wrapping a ``whisper.Whisper`` model."""

    name = "openai-whisper"
    partial_results = True

    def __init__(
        self,
        model_ref: str,
        device: str = "cpu",
        temperature: float = 0.0,
        download_root: str | None = None,
    ) -> None:
        """Load ``model_ref``: a checkpoint path or an official name ("base").

        Official names download from the hub into ``download_root`` on first
        use; a local file path is loaded directly (works offline).
        """
        self.device = device
        self.temperature = float(temperature)
        self.model = whisper.load_model(model_ref, device=device, download_root=download_root)
        self.model.eval()
        # Expose a file name rather than a server-side absolute path.
        self.model_id = Path(model_ref).name if os.path.isfile(model_ref) else model_ref
        self.multilingual: bool = bool(self.model.is_multilingual)
        # Language codes the model actually has tokens for (99 for most
        # multilingual checkpoints, 100 for large-v3 which adds "yue").
        self._tokenizer = get_tokenizer(self.multilingual, num_languages=self.model.num_languages)
        self._languages = (
            sorted(self._tokenizer.all_language_codes) if self.multilingual else ["en"]
        )

    def languages(self) -> list[str]:
        """ISO 639-1 codes accepted in ``TranscribeOptions.language``."""
        return list(self._languages)

    def _detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """Language id on the first 30 s, as ``whisper.transcribe`` would do."""
        if not self.multilingual:
            return "en", 1.0
        mel = whisper.log_mel_spectrogram(
            whisper.pad_or_trim(audio), n_mels=self.model.dims.n_mels
        ).to(self.model.device)
        with torch.no_grad():
            _, probs = self.model.detect_language(mel, self._tokenizer)
        language = max(probs, key=probs.get)
        return language, float(probs[language])

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcription:
        """Transcribe float32 mono 16 kHz audio in [-1, 1].

        Raises ``ValueError`` for audio that is not 1-D or a language the
        model does not support.
        """
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected mono 1-D audio, got shape {audio.shape}")
        if options.language is None:
            language, language_probability = self._detect_language(audio)
        elif options.language in self._languages:
            language, language_probability = options.language, 1.0
        else:
            raise ValueError(f"unsupported language {options.language!r} for {self.model_id}")

        # beam_size is ignored by whisper when temperature > 0; <= 1 means greedy.
        beam_size = options.beam_size if options.beam_size and options.beam_size > 1 else None
        result: dict[str, Any] = self.model.transcribe(
            audio,
            language=language,
            task=options.task,
            temperature=self.temperature,
            word_timestamps=options.word_timestamps,
            initial_prompt=options.initial_prompt,
            beam_size=beam_size,
            condition_on_previous_text=False,
            fp16=False,
            verbose=None,  # None: no printing, no progress bar
        )
        segments = tuple(_segment(i, s) for i, s in enumerate(result["segments"]))
        return Transcription(
            text=result["text"].strip(),
            language=language,
            language_probability=language_probability,
            duration=len(audio) / SAMPLE_RATE,
            segments=segments,
        )


def _segment(index: int, seg: dict[str, Any]) -> Segment:
    """Map one whisper segment dict to the shared ``Segment`` dataclass."""
    words = tuple(
        Word(
            text=w["word"],
            start=float(w["start"]),
            end=float(w["end"]),
            probability=float(w["probability"]),
        )
        for w in seg.get("words", ())
    )
    return Segment(
        id=index,
        start=float(seg["start"]),
        end=float(seg["end"]),
        text=seg["text"].strip(),
        words=words,
        avg_logprob=float(seg["avg_logprob"]),
        no_speech_prob=float(seg["no_speech_prob"]),
    )
