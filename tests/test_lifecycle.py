"""Service lifecycle: health, reflection, metrics, overload, idle unload, graceful shutdown."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from chorus.v1 import common_pb2, stt_pb2, tts_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from devtools.processes import ServiceProcess, free_port
from services.catalog import BY_NAME
from tests.conftest import stt_stub, tts_stub
from tests.support.services import metric_value, running, scrape
from tests.support.speech import espeak, wav_bytes

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TINY = {"CHORUS_STT_MODEL": "whisper-tiny.en", "CHORUS_STT_EXTRA_MODELS": "[]"}


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return espeak(
        "Testing the queue with a sentence of moderate length.",
        "en",
        tmp_path_factory.mktemp("q") / "q.wav",
    )


def test_health_not_serving_until_model_loaded(stt_faster_whisper):
    """whisper-base takes seconds to load: health said NOT_SERVING meanwhile, then SERVING."""
    seen = [s for s in stt_faster_whisper.observed_health if s is not None]
    assert seen[0] == NOT_SERVING
    assert seen[-1] == SERVING
    assert seen.count(SERVING) == 1


def test_reflection_lists_services(stt_faster_whisper, tts_piper):
    for proc, name in (
        (stt_faster_whisper, "chorus.v1.SpeechToText"),
        (tts_piper, "chorus.v1.TextToSpeech"),
    ):
        with grpc.insecure_channel(proc.address) as channel:
            services = ProtoReflectionDescriptorDatabase(channel).get_services()
        assert name in services
        assert "grpc.health.v1.Health" in services


def test_metrics_count_requests(tts_piper):
    stub = tts_stub(tts_piper)
    method = "/chorus.v1.TextToSpeech/Synthesize"
    before = scrape(tts_piper)
    stub.Synthesize(tts_pb2.SynthesizeRequest(text="Count me."), timeout=30)
    with pytest.raises(grpc.RpcError):
        stub.Synthesize(tts_pb2.SynthesizeRequest(text=""), timeout=30)
    after = scrape(tts_piper)
    for code in ("OK", "INVALID_ARGUMENT"):
        delta = metric_value(
            after, "chorus_grpc_requests_total", method=method, code=code
        ) - metric_value(before, "chorus_grpc_requests_total", method=method, code=code)
        assert delta == 1, code
    assert metric_value(after, "chorus_grpc_request_seconds_count", method=method) >= 2
    assert metric_value(after, "chorus_model_load_seconds", model="en_US-joe-medium") > 0


def test_overload_gets_resource_exhausted(logs: Path, speech: bytes):
    """Queue bound 2, one worker: a burst of 10 gets some RESOURCE_EXHAUSTED at once, no hang,
    and every accepted call completes with the right text."""
    env = {**TINY, "CHORUS_STT_MAX_WORKERS": "1", "CHORUS_STT_MAX_QUEUE": "2"}
    with running("stt", env, logs, "overload") as proc:
        stub = stt_stub(proc)
        expected = stub.Transcribe(stt_pb2.TranscribeRequest(audio=speech), timeout=60).text

        def call(_: int) -> str | grpc.StatusCode:
            try:
                return stub.Transcribe(stt_pb2.TranscribeRequest(audio=speech), timeout=120).text
            except grpc.RpcError as err:
                assert "busy" in err.details()
                return err.code()

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            results = list(pool.map(call, range(10)))
        rejected = [r for r in results if r == grpc.StatusCode.RESOURCE_EXHAUSTED]
        accepted = [r for r in results if isinstance(r, str)]
        assert rejected and accepted
        assert len(rejected) + len(accepted) == 10
        assert all(text == expected for text in accepted)
        assert metric_value(scrape(proc), "chorus_worker_rejected_total") == len(rejected)


def test_idle_unload_and_reload(logs: Path, speech: bytes):
    env = {**TINY, "CHORUS_STT_IDLE_UNLOAD_SECONDS": "1"}
    with running("stt", env, logs, "idle") as proc:
        stub = stt_stub(proc)

        def loaded() -> bool:
            return stub.ListModels(common_pb2.ListModelsRequest(), timeout=10).models[0].loaded

        assert loaded()
        deadline = time.monotonic() + 20
        while loaded() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not loaded()
        assert proc.health() == SERVING  # unloaded models reload on demand
        assert stub.Transcribe(stt_pb2.TranscribeRequest(audio=speech), timeout=60).text
        assert loaded()


def test_sigterm_lets_in_flight_call_finish(logs: Path, speech: bytes):
    long_speech = wav_bytes(np.tile(np.frombuffer(speech[44:], np.int16), 8), 22050)
    with running("stt", TINY, logs, "drain") as proc:
        stub = stt_stub(proc)
        method = "/chorus.v1.SpeechToText/Transcribe"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(
                stub.Transcribe, stt_pb2.TranscribeRequest(audio=long_speech), timeout=120
            )
            deadline = time.monotonic() + 30
            while metric_value(scrape(proc), "chorus_grpc_in_flight", method=method) < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            proc.process.send_signal(signal.SIGTERM)
            result = future.result()
        assert result.text.lower().count("moderate length") >= 6
        assert proc.process.wait(60) == 0


def test_model_that_cannot_load_keeps_the_service_not_serving(logs: Path, tmp_path: Path):
    """In a container the process stays up, NOT_SERVING, with the reason in its log (Compose and
    Kubernetes show it unhealthy instead of a crash loop); a local process exits at once."""
    missing = tmp_path / "missing-model"
    env = {"CHORUS_STT_MODEL": str(missing), "CHORUS_STT_EXTRA_MODELS": "[]"}
    spec = BY_NAME["stt"]
    stays = ServiceProcess(
        spec,
        free_port(),
        free_port(),
        env={**env, "CHORUS_STT_EXIT_ON_LOAD_FAILURE": "false"},
        log_path=logs / "stt-unloadable.log",
    ).start()
    try:
        deadline = time.monotonic() + 60
        while "cannot serve" not in stays.log_path.read_text(errors="replace"):
            assert stays.process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        assert stays.health() == NOT_SERVING and stays.process.poll() is None
        assert str(missing) in stays.log_path.read_text(errors="replace")
    finally:
        assert stays.stop() == 0
    exits = ServiceProcess(
        spec, free_port(), free_port(), env=env, log_path=logs / "stt-unloadable-exit.log"
    ).start()
    with pytest.raises(RuntimeError, match="exited with code"):
        exits.wait_ready(60)
