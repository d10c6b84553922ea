"""Piper (ONNX VITS voices) backend, the default: fast on CPU, one model per voice.

The ONNX Runtime session is built here rather than by ``PiperVoice.load`` so that its threads
follow the service's settings: ``cpu_threads``, and no spin-waiting between operators by
default. In a turn the voice speaks one sentence while the LLM writes the next; spinning
threads held cores the LLM needed (a text turn took 1.15x the sum of its stages called one at a
time, 1.09x without spinning, on 2 cores).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
from piper import PiperConfig, PiperVoice, SynthesisConfig

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


def load_piper_voice(
    model_path: Path, use_cuda: bool = False, cpu_threads: int = 0, spin_wait: bool = False
) -> PiperVoice:
    """``PiperVoice.load`` with the session's threads set: ``cpu_threads`` ONNX Runtime intra-op
    threads (0: one per core), busy-waiting between operators only if ``spin_wait``."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = cpu_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
    providers = ["CUDAExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
    return PiperVoice(
        session=onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=providers
        ),
        config=PiperConfig.from_dict(json.loads(_config_path(model_path).read_text())),
    )


class PiperBackend:
    """``TextToSpeechBackend`` for one Piper voice (``<name>.onnx`` beside ``<name>.onnx.json``)."""

    name = "piper"

    def __init__(
        self,
        model_path: Path,
        use_cuda: bool = False,
        cpu_threads: int = 0,
        spin_wait: bool = False,
    ) -> None:
        self._info = describe_piper_voice(model_path)
        self._voice = load_piper_voice(model_path, use_cuda, cpu_threads, spin_wait)

    def voices(self) -> list[VoiceInfo]:
        return [self._info]

    def synthesize(self, text: str, voice: str, speed: float) -> tuple[np.ndarray, int]:
        config = SynthesisConfig(length_scale=1.0 / speed)
        chunks = [c.audio_int16_array.reshape(-1) for c in self._voice.synthesize(text, config)]
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return samples, self._info.sample_rate_hz
