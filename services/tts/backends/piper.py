"""Piper (ONNX VITS voices) backend, the default: fast on CPU, one model per voice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from piper import PiperVoice, SynthesisConfig

from services.tts.backends.base import VoiceInfo


def describe_piper_voice(model_path: Path) -> VoiceInfo:
    """Read a voice's id, language and rate from its JSON config without loading the model."""
    config = json.loads(_config_path(model_path).read_text())
    language = config.get("language", {}).get("code", "en_US").replace("_", "-")
    return VoiceInfo(
        id=model_path.name.removesuffix(".onnx"),
        name=config.get("dataset") or model_path.stem,
        language=language,
        sample_rate_hz=int(config["audio"]["sample_rate"]),
        backend="piper",
    )


def _config_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".json")


class PiperBackend:
    """``TextToSpeechBackend`` for one Piper voice (``<name>.onnx`` beside ``<name>.onnx.json``)."""

    name = "piper"

    def __init__(self, model_path: Path, use_cuda: bool = False) -> None:
        self._info = describe_piper_voice(model_path)
        self._voice = PiperVoice.load(
            model_path, config_path=_config_path(model_path), use_cuda=use_cuda
        )

    def voices(self) -> list[VoiceInfo]:
        return [self._info]

    def synthesize(self, text: str, voice: str, speed: float) -> tuple[np.ndarray, int]:
        config = SynthesisConfig(length_scale=1.0 / speed)
        chunks = [c.audio_int16_array.reshape(-1) for c in self._voice.synthesize(text, config)]
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return samples, self._info.sample_rate_hz
