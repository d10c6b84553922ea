"""The openai-api TTS backend against a real OpenAI-compatible server on loopback: what the
shared contract (test_tts_contract.py, which also runs on it, asking for WAV) does not cover:
OpenAI's raw 24 kHz PCM streamed in, the remote's errors mapped to statuses, and the key kept
out of logs."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from chorus.v1 import common_pb2, tts_pb2

from devtools.processes import ServiceProcess, free_port
from tests.conftest import OPENAI_API_KEY, tts_openai_api_env, tts_stub
from tests.support.services import running
from tests.support.speech import read_wav

E = common_pb2.AudioEncoding
TEXT = "The weather is lovely today. We will walk to the park."


@pytest.fixture(scope="module")
def tts_pcm(logs, openai_speech_server) -> Iterator[ServiceProcess]:
    """OpenAI's defaults: raw PCM at 24 kHz, the key from the environment."""
    env = tts_openai_api_env(
        openai_speech_server,
        CHORUS_TTS_OPENAI_API__RESPONSE_FORMAT="pcm",
        CHORUS_TTS_OPENAI_API__SAMPLE_RATE_HZ="24000",
        CHORUS_TTS_OPENAI_API__VOICES='["en_US-joe-medium", "alloy"]',
    )
    with running("tts", env, logs, "api-pcm") as proc:
        yield proc


def _error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=60)
    return err.value


def _both(stub):
    return (stub.Synthesize, lambda r, **kw: list(stub.StreamingSynthesize(r, **kw)))


def test_pcm_voices_at_24_khz(tts_pcm, openai_speech_server):
    stub = tts_stub(tts_pcm)
    voices = stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=10).voices
    assert [(v.id, v.sample_rate_hz, v.backend) for v in voices] == [
        ("en_US-joe-medium", 24000, "openai-api"),
        ("alloy", 24000, "openai-api"),
    ]
    before = openai_speech_server.hits["/v1/audio/speech"]
    r = stub.Synthesize(tts_pb2.SynthesizeRequest(text=TEXT), timeout=60)
    samples, rate = read_wav(r.audio)
    assert rate == 24000 == r.sample_rate_hz
    assert len(samples) / rate == pytest.approx(r.duration_seconds, abs=0.01)
    assert 2.0 < r.duration_seconds < 8.0
    assert np.abs(samples).max() > 1000
    assert openai_speech_server.hits["/v1/audio/speech"] == before + 1


def test_pcm_streaming_one_request_per_sentence(tts_pcm, openai_speech_server):
    before = openai_speech_server.hits["/v1/audio/speech"]
    chunks = list(
        tts_stub(tts_pcm).StreamingSynthesize(
            tts_pb2.SynthesizeRequest(
                text=TEXT, encoding=E.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000
            ),
            timeout=60,
        )
    )
    assert [c.text for c in chunks] == ["The weather is lovely today.", "We will walk to the park."]
    assert openai_speech_server.hits["/v1/audio/speech"] == before + 2
    for chunk in chunks:
        assert chunk.sample_rate_hz == 16000
        assert len(chunk.audio) / 2 / 16000 == pytest.approx(chunk.duration_seconds, abs=0.01)


def test_unknown_remote_voice_is_invalid_argument(tts_pcm):
    """ "alloy" is configured but the remote has no such voice: its 400 becomes INVALID_ARGUMENT."""
    err = _error(tts_stub(tts_pcm).Synthesize, tts_pb2.SynthesizeRequest(text="Hi.", voice="alloy"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "alloy" in err.details()


def test_wrong_key_is_unauthenticated(tts_pcm, openai_speech_server):
    openai_speech_server.api_key = "sk-the-server-wants-another-key"
    try:
        for call in _both(tts_stub(tts_pcm)):
            err = _error(call, tts_pb2.SynthesizeRequest(text="Hello."))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert OPENAI_API_KEY not in err.details() and "[redacted]" in err.details()
    finally:
        openai_speech_server.api_key = OPENAI_API_KEY


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (500, grpc.StatusCode.UNAVAILABLE),
        (503, grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_remote_errors(tts_pcm, openai_speech_server, status, code):
    with openai_speech_server.fail(status):
        for call in _both(tts_stub(tts_pcm)):
            err = _error(call, tts_pb2.SynthesizeRequest(text="Hello."))
            assert err.code() == code
            assert f"({status})" in err.details()


def test_connection_refused_is_unavailable(logs, openai_speech_server):
    env = tts_openai_api_env(
        openai_speech_server, CHORUS_TTS_OPENAI_API__BASE_URL=f"http://127.0.0.1:{free_port()}/v1"
    )
    with running("tts", env, logs, "api-refused") as proc:
        for call in _both(tts_stub(proc)):
            err = _error(call, tts_pb2.SynthesizeRequest(text="Hello."))
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            assert "cannot be reached" in err.details()


def test_key_never_in_logs(logs, tts_pcm, tts_openai_api):
    tts_stub(tts_openai_api).Synthesize(tts_pb2.SynthesizeRequest(text="Hello."), timeout=60)
    files = sorted(logs.glob("tts-api*.log"))
    others = sorted(set(logs.glob("tts-api*")) - set(files))  # span files and the like
    assert len(files) >= 2
    for path in files:
        text = path.read_text(errors="replace")
        assert text and " DEBUG " in text, path
        assert OPENAI_API_KEY not in text, path
        assert OPENAI_API_KEY[-12:] not in text, path
    for path in others:
        assert OPENAI_API_KEY[-12:] not in path.read_text(errors="replace"), path
