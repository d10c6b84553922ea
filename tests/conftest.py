"""Session fixtures: real services on 127.0.0.1, each model loaded once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from chorus.v1 import stt_pb2_grpc, tts_pb2, tts_pb2_grpc

from devtools.processes import ServiceProcess
from services.stt.backends.ct2_kernels import DEFAULT_CPU_ISA, pin_cpu_kernels
from tests.support.backends import each_backend
from tests.support.openai_speech_server import OpenAISpeechServer
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
# The orchestrator's turn limits; a gateway in front is given the same variables, as every
# container is given the one shared env file.
TURN_LIMITS = {"CHORUS_ORCH_MAX_HISTORY_MESSAGES": "8"}


def pytest_configure(config: pytest.Config) -> None:
    """CTranslate2's CPU kernels pinned in this process as the STT service pins its own, before
    any test module imports faster-whisper (CTranslate2 reads CT2_USE_MKL as it is imported):
    the in-process engines (the loopback OpenAI server, the encoder-reuse tests) then compute
    exactly as the services they are compared with, on any CPU."""
    pin_cpu_kernels(DEFAULT_CPU_ISA)
    config.addinivalue_line(
        "markers", "after_everything: run after every other test (tests/test_secrets_in_logs.py)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``after_everything`` run last, whatever their file's name, so they see what
    the whole session left behind (the services' logs)."""
    items.sort(key=lambda item: item.get_closest_marker("after_everything") is not None)


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def stt_faster_whisper(logs: Path) -> Iterator[ServiceProcess]:
    """faster-whisper with the multilingual Whisper base weights (the default backend)."""
    with running("stt", {**STT_LIMITS, "CHORUS_STT_BACKEND": "faster-whisper"}, logs, "fw") as p:
        yield p


@pytest.fixture(scope="session")
def stt_openai_whisper(
    logs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """openai-whisper with a tiny random-weight checkpoint loaded by ``whisper.load_model``."""
    checkpoint = build_tiny_openai_whisper(tmp_path_factory.mktemp("whisper") / "tiny-random.pt")
    env = {
        **STT_LIMITS,
        "CHORUS_STT_BACKEND": "openai-whisper",
        "CHORUS_STT_MODEL": str(checkpoint),
    }
    with running("stt", env, logs, "ow") as p:
        yield p


# The key the loopback OpenAI-compatible server demands; it must never reach a service's log.
OPENAI_API_KEY = "sk-chorus-test-5f1c8e0a9b7d4e2f"


@pytest.fixture(scope="session")
def openai_speech_server() -> Iterator[OpenAISpeechServer]:
    """An OpenAI-compatible speech API on loopback (faster-whisper base + Piper), for the
    openai-api backends: the real ``openai`` client speaks the real wire protocol to it."""
    with OpenAISpeechServer(
        api_key=OPENAI_API_KEY, stt_models={"whisper-base": "whisper-base"}, beam_size=1
    ) as server:
        yield server


def stt_openai_api_env(server: OpenAISpeechServer, key_file: Path) -> dict[str, str]:
    """Environment of an STT service on the openai-api backend (the key read from a file)."""
    return {
        **STT_LIMITS,
        "CHORUS_STT_BACKEND": "openai-api",
        "CHORUS_STT_MODEL": "whisper-base",
        "CHORUS_STT_OPENAI_API__BASE_URL": server.base_url,
        "CHORUS_STT_OPENAI_API__KEY_FILE": str(key_file),
        "CHORUS_STT_OPENAI_API__MAX_RETRIES": "1",
        "CHORUS_STT_MAX_WORKERS": "4",
        "CHORUS_STT_LOG_LEVEL": "DEBUG",  # the key must stay out of even the most verbose log
    }


@pytest.fixture(scope="session")
def stt_openai_api(
    logs: Path, openai_speech_server: OpenAISpeechServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The openai-api backend against the loopback server, configured only by environment."""
    key_file = tmp_path_factory.mktemp("secrets") / "openai-key"
    key_file.write_text(OPENAI_API_KEY + "\n")
    with running("stt", stt_openai_api_env(openai_speech_server, key_file), logs, "api") as p:
        yield p


stt_server = each_backend("stt")
"""Each STT backend in turn (``stt_<backend>``): contract tests must pass on all of them."""


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
        "CHORUS_TTS_COQUI__MODEL": str(model),
        "CHORUS_TTS_COQUI__CONFIG": str(config),
    }
    with running("tts", env, logs, "coqui") as p:
        yield p


def tts_openai_api_env(server: OpenAISpeechServer, **overrides: str) -> dict[str, str]:
    """Environment of a TTS service on the openai-api backend (the key from the environment).

    The contract's rates (22,050 Hz voices) hold because WAV is asked for, whose header carries
    Piper's rate, and the voices are declared at that rate; ``pcm`` at 24 kHz (OpenAI's) is
    tested in test_tts_api.py.
    """
    return {
        **TTS_LIMITS,
        "CHORUS_TTS_BACKEND": "openai-api",
        "CHORUS_TTS_OPENAI_API__BASE_URL": server.base_url,
        "CHORUS_TTS_OPENAI_API__KEY": OPENAI_API_KEY,
        "CHORUS_TTS_OPENAI_API__MODEL": "tts-1",
        "CHORUS_TTS_OPENAI_API__VOICES": '["en_US-joe-medium"]',
        "CHORUS_TTS_OPENAI_API__RESPONSE_FORMAT": "wav",
        "CHORUS_TTS_OPENAI_API__SAMPLE_RATE_HZ": "22050",
        "CHORUS_TTS_OPENAI_API__MAX_RETRIES": "1",
        "CHORUS_TTS_MAX_WORKERS": "4",
        "CHORUS_TTS_LOG_LEVEL": "DEBUG",
        **overrides,
    }


@pytest.fixture(scope="session")
def tts_openai_api(
    logs: Path, openai_speech_server: OpenAISpeechServer
) -> Iterator[ServiceProcess]:
    with running("tts", tts_openai_api_env(openai_speech_server), logs, "api") as p:
        yield p


tts_server = each_backend("tts")
"""Each TTS backend in turn (``tts_<backend>``): contract tests must pass on all of them."""


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


LLM_LIMITS = {
    "CHORUS_LLM_MAX_WORKERS": "1",
    "CHORUS_LLM_MAX_QUEUE": "1",
    "CHORUS_LLM_MAX_TOKENS_LIMIT": "1024",
    "CHORUS_LLM_MAX_INPUT_CHARS": "4000",
    "CHORUS_LLM_CPU_THREADS": "2",
    "CHORUS_LLM_LOG_LEVEL": "DEBUG",
}
IMAGE_LIMITS = {
    "CHORUS_IMAGE_MAX_WORKERS": "1",
    "CHORUS_IMAGE_MAX_QUEUE": "1",
    "CHORUS_IMAGE_MAX_PROMPT_CHARS": "200",
    "CHORUS_IMAGE_MAX_SIDE": "512",
    "CHORUS_IMAGE_MAX_STEPS": "50",
    "CHORUS_IMAGE_MAX_IMAGES": "3",
    "CHORUS_IMAGE_DEFAULT_WIDTH": "64",
    "CHORUS_IMAGE_DEFAULT_HEIGHT": "64",
    "CHORUS_IMAGE_DEFAULT_STEPS": "4",
    "CHORUS_IMAGE_CPU_THREADS": "2",
    "CHORUS_IMAGE_LOG_LEVEL": "DEBUG",
}


@pytest.fixture(scope="session")
def llm_llama_cpp(logs: Path) -> Iterator[ServiceProcess]:
    """llama.cpp with the real Gemma 3 270M weights."""
    env = {**LLM_LIMITS, "CHORUS_LLM_BACKEND": "llama-cpp", "CHORUS_LLM_MODEL": "gemma-3-270m"}
    with running("llm", env, logs, "llama-cpp") as p:
        yield p


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Stable Diffusion pipeline saved with ``save_pretrained``."""
    from tests.support.tiny_diffusers import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "tiny-sd")


@pytest.fixture(scope="session")
def image_diffusers(logs: Path, tiny_sd: Path) -> Iterator[ServiceProcess]:
    env = {**IMAGE_LIMITS, "CHORUS_IMAGE_BACKEND": "diffusers", "CHORUS_IMAGE_MODEL": str(tiny_sd)}
    with running("image", env, logs, "diffusers") as p:
        yield p


def orchestrator_env(
    stt: ServiceProcess, tts: ServiceProcess, llm: ServiceProcess, image: ServiceProcess | str
) -> dict[str, str]:
    return {
        "CHORUS_ORCH_STT_ADDRESS": stt.address,
        "CHORUS_ORCH_TTS_ADDRESS": tts.address,
        "CHORUS_ORCH_LLM_ADDRESS": llm.address,
        "CHORUS_ORCH_IMAGE_ADDRESS": image if isinstance(image, str) else image.address,
        # A live session renews its speech-to-text call before the test STT's 60 s limit (a
        # browser left open a minute got "stream is longer than the limit of 60 s").
        "CHORUS_ORCH_SESSION_STREAM_SECONDS": "30",
        **TURN_LIMITS,
    }


@pytest.fixture(scope="session")
def orchestrator(
    logs: Path,
    tmp_path_factory: pytest.TempPathFactory,
    stt_faster_whisper,
    tts_piper,
    llm_llama_cpp,
    image_diffusers,
) -> Iterator[ServiceProcess]:
    """The orchestrator over the real model services, its stores in the session's own folder
    (never the user's ~/.cache/chorus: the fuzz tests create conversations)."""
    stores = tmp_path_factory.mktemp("orchestrator-stores")
    env = {
        **orchestrator_env(stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers),
        "CHORUS_ARTIFACTS_FOLDER": str(stores / "artifacts"),
        "CHORUS_CONVERSATIONS_URL": f"sqlite:///{stores / 'conversations.sqlite3'}",
    }
    with running("orchestrator", env, logs, "a") as p:
        yield p


# --- HTTP gateway (tests/test_gateway.py, tests/test_browser.py) ------------------------------


@pytest.fixture(scope="session")
def gateway(
    logs: Path, orchestrator, stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers
):
    """The HTTP gateway (gunicorn) over the orchestrator and the model services; ready when its
    /readyz says the orchestrator is SERVING."""
    from tests.support.gateway import gateway_env, running_gateway

    env = gateway_env(
        orchestrator=orchestrator,
        stt=stt_faster_whisper,
        tts=tts_piper,
        llm=llm_llama_cpp,
        image=image_diffusers,
        # The orchestrator's artifact store: /v1/artifacts serves what its turns kept.
        CHORUS_ARTIFACTS_FOLDER=orchestrator.env["CHORUS_ARTIFACTS_FOLDER"],
        **TURN_LIMITS,
    )
    with running_gateway(env, logs, "suite", ready="/readyz") as proc:
        yield proc
