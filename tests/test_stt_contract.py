"""The SpeechToText contract, on every backend (switched only by environment variables)."""

from __future__ import annotations

import concurrent.futures

import grpc
import numpy as np
import pytest
from chorus.v1 import common_pb2, stt_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from tests.conftest import stt_stub
from tests.support.speech import espeak, reencode, wav_bytes


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return espeak("Hello, this is a short test.", "en", tmp_path_factory.mktemp("a") / "hello.wav")


def _error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    return err.value


def test_transcribe_shape(stt_server, hello):
    r = stt_stub(stt_server).Transcribe(
        stt_pb2.TranscribeRequest(audio=hello, word_timestamps=True), timeout=120
    )
    assert r.language
    assert 0 < r.language_probability <= 1
    assert r.duration_seconds == pytest.approx(len(hello[44:]) / 2 / 22050, abs=0.05)
    assert r.usage.audio_seconds == pytest.approx(r.duration_seconds)
    assert r.segments
    for segment in r.segments:
        assert 0 <= segment.start <= segment.end <= r.duration_seconds + 0.5
        for word in segment.words:
            assert 0 <= word.start <= word.end <= r.duration_seconds + 0.5
    assert any(s.words for s in r.segments)


def test_given_language_is_kept(stt_server, hello):
    r = stt_stub(stt_server).Transcribe(
        stt_pb2.TranscribeRequest(audio=hello, language="en"), timeout=120
    )
    assert r.language == "en"
    assert r.language_probability == 1.0 or r.language_probability > 0.5


def test_list_models(stt_server):
    models = stt_stub(stt_server).ListModels(common_pb2.ListModelsRequest(), timeout=10).models
    default = [m for m in models if m.is_default]
    assert len(default) == 1 and default[0].loaded
    assert "en" in default[0].languages


def _field_violation(err: grpc.RpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return bad.field_violations[0].field
    return ""


def test_bad_audio(stt_server, hello):
    stub = stt_stub(stt_server)
    cases = {
        "empty": b"",
        "random bytes": np.random.default_rng(1).bytes(20_000),
        "truncated": hello[: len(hello) // 3],
        "header only": hello[:44],
    }
    for name, audio in cases.items():
        err = _error(stub.Transcribe, stt_pb2.TranscribeRequest(audio=audio), timeout=30)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert "audio" in err.details(), name
        assert _field_violation(err) == "audio", name


def test_truncated_compressed_audio(stt_server, hello):
    mp3 = reencode(hello, "mp3", "libmp3lame", 22050)
    err = _error(
        stt_stub(stt_server).Transcribe, stt_pb2.TranscribeRequest(audio=mp3[:300]), timeout=30
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_limits(stt_server):
    stub = stt_stub(stt_server)
    long_audio = wav_bytes(np.zeros(16000 * 70, np.int16), 16000)  # 70 s > 60 s limit, 2.2 MB
    err = _error(stub.Transcribe, stt_pb2.TranscribeRequest(audio=long_audio), timeout=30)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "longer than the limit" in err.details()

    too_many_bytes = b"\0" * (7 * 1024 * 1024)  # over max_audio_bytes (6 MiB), under message limit
    err = _error(stub.Transcribe, stt_pb2.TranscribeRequest(audio=too_many_bytes), timeout=30)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit" in err.details()

    oversized = b"\0" * (9 * 1024 * 1024)  # over the 8 MiB gRPC message limit
    err = _error(stub.Transcribe, stt_pb2.TranscribeRequest(audio=oversized), timeout=30)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_bad_options(stt_server, hello):
    stub = stt_stub(stt_server)
    err = _error(stub.Transcribe, stt_pb2.TranscribeRequest(audio=hello, language="xx"), timeout=30)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _field_violation(err) == "language"
    err = _error(stub.Transcribe, stt_pb2.TranscribeRequest(audio=hello, model="nope"), timeout=30)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = _error(
        stub.Transcribe,
        stt_pb2.TranscribeRequest(audio=hello, initial_prompt="x" * 5000),
        timeout=30,
    )
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_streaming_bad_format(stt_server):
    config = stt_pb2.StreamingTranscribeConfig(
        format=common_pb2.RawAudioFormat(encoding=common_pb2.AUDIO_ENCODING_MP3)
    )
    err = _error(
        lambda: list(
            stt_stub(stt_server).StreamingTranscribe(
                iter([stt_pb2.StreamingTranscribeRequest(config=config)]), timeout=30
            )
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    odd = [
        stt_pb2.StreamingTranscribeRequest(config=stt_pb2.StreamingTranscribeConfig()),
        stt_pb2.StreamingTranscribeRequest(audio_chunk=b"\0\0\0"),
    ]
    err = _error(lambda: list(stt_stub(stt_server).StreamingTranscribe(iter(odd), timeout=30)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_streaming_transcribes(stt_server, hello):
    pcm = np.frombuffer(hello[44:], dtype=np.int16)
    silence = np.zeros(22050, np.int16)
    audio = np.concatenate([pcm, silence])
    requests = [
        stt_pb2.StreamingTranscribeRequest(
            config=stt_pb2.StreamingTranscribeConfig(
                format=common_pb2.RawAudioFormat(sample_rate_hz=22050), language="en"
            )
        ),
        *(
            stt_pb2.StreamingTranscribeRequest(audio_chunk=audio[i : i + 2205].tobytes())
            for i in range(0, len(audio), 2205)
        ),
    ]
    responses = list(stt_stub(stt_server).StreamingTranscribe(iter(requests), timeout=120))
    finals = [r for r in responses if r.is_final]
    assert finals and finals[-1].audio_received_seconds == pytest.approx(
        len(audio) / 22050, abs=0.01
    )
    assert all(r.language == "en" for r in finals)


def test_sixteen_concurrent_requests(stt_server, hello):
    stub = stt_stub(stt_server)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [
            pool.submit(
                stub.Transcribe, stt_pb2.TranscribeRequest(audio=hello, language="en"), timeout=300
            )
            for _ in range(16)
        ]
        results = [f.result() for f in futures]
    assert len({r.text for r in results}) == 1 and results[0].text


def test_still_healthy_after_bad_input(stt_server, hello):
    stub = stt_stub(stt_server)
    for audio in (b"", b"garbage", hello[:100]):
        with pytest.raises(grpc.RpcError):
            stub.Transcribe(stt_pb2.TranscribeRequest(audio=audio), timeout=30)
    assert stt_server.health() == health_pb2.HealthCheckResponse.SERVING
    assert stub.Transcribe(stt_pb2.TranscribeRequest(audio=hello), timeout=120).segments
