"""Session fixtures: real services on 127.0.0.1, each model loaded once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from chorus.v1 import stt_pb2_grpc, tts_pb2, tts_pb2_grpc

from services.launcher import ServiceProcess
from tests.support.services import running
from tests.support.tiny_coqui import build_tiny_coqui_model
from tests.support.tiny_whisper import build_tiny_openai_whisper

# Limits of the test servers, small enough to test cheaply.
STT_LIMITS = {
    "CHORUS_STT_MAX_MESSAGE_BYTES": str(8 * 1024 * 1024),
    "CHORUS_STT_MAX_AUDIO_BYTES": str(6 * 1024 * 1024),
    "CHORUS_STT_MAX_AUDIO_SECONDS": "60",
    "CHORUS_STT_MAX_QUEUE": "32",
    "CHORUS_STT_BEAM_SIZE": "1",
}
TTS_LIMITS = {"CHORUS_TTS_MAX_TEXT_CHARS": "2000", "CHORUS_TTS_MAX_QUEUE": "32"}


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def stt_faster_whisper(logs: Path) -> Iterator[ServiceProcess]:
    """faster-whisper with the multilingual Whisper base weights (the default backend)."""
    with running("stt", {**STT_LIMITS, "CHORUS_STT_BACKEND": "faster-whisper"}, logs, "fw") as p:
        yield p


@pytest.fixture(scope="session")
def stt_openai_whisper(logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """openai-whisper with a tiny random-weight checkpoint loaded by ``whisper.load_model``."""
    checkpoint = build_tiny_openai_whisper(tmp_path_factory.mktemp("whisper") / "tiny-random.pt")
    env = {**STT_LIMITS, "CHORUS_STT_BACKEND": "openai-whisper", "CHORUS_STT_MODEL": str(checkpoint)}
    with running("stt", env, logs, "ow") as p:
        yield p


@pytest.fixture(scope="session", params=["faster-whisper", "openai-whisper"])
def stt_server(request: pytest.FixtureRequest) -> ServiceProcess:
    """Each STT backend in turn: contract tests must pass on both."""
    name = "stt_faster_whisper" if request.param == "faster-whisper" else "stt_openai_whisper"
    return request.getfixturevalue(name)


@pytest.fixture(scope="session")
def tts_piper(logs: Path) -> Iterator[ServiceProcess]:
    with running("tts", {**TTS_LIMITS, "CHORUS_TTS_BACKEND": "piper"}, logs, "piper") as p:
        yield p


@pytest.fixture(scope="session")
def tts_coqui(logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """Coqui TTS with a tiny random-weight VITS loaded through ``TTS(model_path, config_path)``."""
    model, config = build_tiny_coqui_model(tmp_path_factory.mktemp("coqui"))
    env = {
        **TTS_LIMITS,
        "CHORUS_TTS_BACKEND": "coqui",
        "CHORUS_TTS_COQUI_MODEL": str(model),
        "CHORUS_TTS_COQUI_CONFIG": str(config),
    }
    with running("tts", env, logs, "coqui") as p:
        yield p


@pytest.fixture(scope="session", params=["piper", "coqui"])
def tts_server(request: pytest.FixtureRequest) -> ServiceProcess:
    return request.getfixturevalue(f"tts_{request.param}")


def stt_stub(proc: ServiceProcess) -> stt_pb2_grpc.SpeechToTextStub:
    return stt_pb2_grpc.SpeechToTextStub(grpc.insecure_channel(proc.address))


def tts_stub(proc: ServiceProcess) -> tts_pb2_grpc.TextToSpeechStub:
    return tts_pb2_grpc.TextToSpeechStub(grpc.insecure_channel(proc.address))


ROUND_TRIP_SENTENCES = [
    "The weather is lovely today, so we will walk to the park.",
    "Please send the report to my office before noon tomorrow.",
    "She bought three apples and a loaf of bread at the market.",
]


@pytest.fixture(scope="session")
def piper_speech(tts_piper: ServiceProcess) -> dict[str, bytes]:
    """Known English sentences spoken by Piper through the TTS gRPC service (WAV, 22.05 kHz)."""
    stub = tts_stub(tts_piper)
    return {
        text: stub.Synthesize(tts_pb2.SynthesizeRequest(text=text), timeout=60).audio
        for text in ROUND_TRIP_SENTENCES
    }
