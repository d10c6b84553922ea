"""The containers for real: every image built from the one Dockerfile, the suite started with
Docker Compose from the repository's docker-compose.yml, and used through its one published port.

A real Docker engine (a private daemon when none answers, see tests/support/containers.py), the
real Compose v2, the real images and models. Build arguments stand in only for what this machine
cannot reach: the registry's base image (a local Debian bookworm + Python 3.11 image) and the
download and compile of torch and llama.cpp (the machine's wheel cache, as an image).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import threading
import time
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests

from devtools.processes import free_port
from services.catalog import SERVICES
from tests.support.containers import (
    Compose,
    Docker,
    base_image,
    docker_engine,
    wheels_image,
)
from tests.support.gateway import sse_events
from tests.support.speech import word_overlap

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"
CANARY_KEY = "sk-chorus-compose-canary-7d1e0c4b"
IMAGES = {name: f"chorus/{name}:0.1.0" for name in [*(s.name for s in SERVICES), "envoy"]}


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    with docker_engine() as engine:
        yield engine


@pytest.fixture(scope="module")
def compose(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    """The whole suite under Compose (built, started, every healthcheck passed), then removed
    with ``down -v``."""
    tmp = tmp_path_factory.mktemp("compose")
    secrets = tmp / "secrets.env"
    secrets.write_text(f"CHORUS_GATEWAY_API_KEY={CANARY_KEY}\n")
    # The secret reaches the gateway the way users give it: an env file outside the image.
    override = tmp / "compose.secrets.yml"
    override.write_text(
        json.dumps({"services": {"gateway": {"env_file": [{"path": str(secrets)}]}}})
    )
    (tmp / "models").mkdir()
    env = {
        "CHORUS_PYTHON_IMAGE": base_image(docker),
        "CHORUS_WHEELS_IMAGE": wheels_image(docker) or "wheels-from-source",
        # A private daemon has no default bridge: builds use the host's network.
        "CHORUS_BUILD_NETWORK": "host" if docker.started_pid else "default",
        "CHORUS_HTTP_PORT": str(free_port()),
        "CHORUS_MODELS_DIR": str(tmp / "models"),
    }
    files = (Path(__file__).resolve().parents[1] / "docker-compose.yml", override)
    suite = Compose(docker, project=f"chorus-test-{os.getpid()}", env=env, files=files)
    started = time.monotonic()
    suite("build", timeout=3600)
    print(f"compose build: {time.monotonic() - started:.0f} s")
    try:
        started = time.monotonic()
        up = suite("up", "-d", "--wait", "--wait-timeout", "600", timeout=900, check=False)
        print(f"compose up --wait: {time.monotonic() - started:.0f} s")
        if up.returncode != 0:
            raise AssertionError(
                f"compose up failed:\n{up.stderr[-4000:]}\n{suite('logs', '--tail', '60').stdout}"
            )
        yield suite
    finally:
        # Every container's log, kept where tests/test_secrets_in_logs.py looks after the session.
        saved = suite("logs", "--no-color", timeout=120, check=False).stdout
        (tmp / "compose-services.log").write_text(saved)
        suite("down", "-v", "--remove-orphans", "--timeout", "30", timeout=300, check=False)


@pytest.fixture(scope="module")
def url(compose: Compose) -> str:
    return f"http://127.0.0.1:{compose.env['CHORUS_HTTP_PORT']}"


@pytest.fixture(scope="module")
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {CANARY_KEY}"}


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=CANARY_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def question_wav(client: openai.OpenAI) -> bytes:
    """The question spoken by the suite's own TTS container (through /v1/audio/speech)."""
    speech = client.audio.speech.create(
        model="tts-1", voice="alloy", input=QUESTION, response_format="wav"
    )
    return speech.content


def test_every_image_is_built_and_every_service_healthy(compose: Compose, docker: Docker):
    containers = compose.containers()
    by_service = {c["Service"]: c for c in containers}
    assert set(by_service) == set(IMAGES)
    for name, container in by_service.items():
        assert container["State"] == "running", container
        assert container["Health"] == "healthy", container
        assert container["Image"] == IMAGES[name]
    sizes = {
        name: int(docker.run("image", "inspect", "--format", "{{.Size}}", image).stdout)
        for name, image in IMAGES.items()
    }
    print("image sizes (MB):", {n: round(s / 1e6) for n, s in sizes.items()})


def test_page_readiness_and_models(url: str, auth: dict[str, str], compose: Compose):
    page = requests.get(f"{url}/api/interface/", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert requests.get(f"{url}/readyz", timeout=30).status_code == 200
    assert requests.get(f"{url}/v1/models", timeout=30).status_code == 401
    models = requests.get(f"{url}/v1/models", headers=auth, timeout=30)
    assert models.status_code == 200, models.text
    owners = {m["owned_by"] for m in models.json()["data"]}
    assert {"chorus-stt", "chorus-tts", "chorus-llm", "chorus-image"} <= owners, owners


def test_speech_and_transcription(client: openai.OpenAI, question_wav: bytes):
    with wave.open(io.BytesIO(question_wav)) as w:
        assert w.getnframes() / w.getframerate() > 1.0
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("q.wav", question_wav, "audio/wav")
    ).text
    assert word_overlap(QUESTION, text) >= 0.8, text


def test_spoken_turn(url: str, auth: dict[str, str], question_wav: bytes):
    options = {"max_tokens": 24, "temperature": 0, "language": "en"}
    with requests.post(
        f"{url}/api/turns",
        headers=auth,
        files={"audio": ("q.wav", question_wav, "audio/wav")},
        data={"options": json.dumps(options)},
        stream=True,
        timeout=300,
    ) as response:
        assert response.status_code == 200, response.text
        events = list(sse_events(response))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "done" and "error" not in kinds, events[-3:]
    transcript = next(d for k, d in events if k == "transcript_final")
    assert word_overlap(QUESTION, transcript["text"]) >= 0.8, transcript
    reply = next(d for k, d in events if k == "reply_final")
    assert reply["text"].strip()
    audio = [base64.b64decode(d["audio"]) for k, d in events if k == "audio_chunk"]
    assert audio and all(chunk.startswith(b"RIFF") for chunk in audio)


def test_scaled_stt_spreads_calls_and_survives_a_killed_replica(
    compose: Compose, docker: Docker, client: openai.OpenAI, question_wav: bytes
):
    compose("up", "-d", "--wait", "--wait-timeout", "300", "--scale", "stt=2", "stt", timeout=600)
    replicas = [c for c in compose.containers("stt") if c["State"] == "running"]
    assert len(replicas) == 2
    _wait_envoy_hosts(docker, compose, "stt", 2)
    before = {c["Name"]: _transcribe_count(docker, c["Name"]) for c in replicas}

    def transcribe(_: int) -> str:
        return client.audio.transcriptions.create(
            model="whisper-1", file=("q.wav", question_wav, "audio/wav")
        ).text

    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(transcribe, range(8)))
    assert all(word_overlap(QUESTION, t) >= 0.8 for t in texts), texts
    served = {n: _transcribe_count(docker, n) - before[n] for n in before}
    assert all(count > 0 for count in served.values()), served

    # A replica killed in the middle of a burst costs no request: Envoy and the gateway retry the
    # idempotent call on the survivor.
    victim = replicas[0]["Name"]
    killed = threading.Event()

    def transcribe_and_kill(i: int) -> str:
        if i == 4 and not killed.is_set():
            killed.set()
            docker.run("kill", "--signal", "KILL", victim)
        return transcribe(i)

    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(transcribe_and_kill, range(16)))
    assert killed.is_set()
    assert len(texts) == 16 and all(word_overlap(QUESTION, t) >= 0.8 for t in texts), texts
    compose("up", "-d", "--wait", "--wait-timeout", "300", "--scale", "stt=1", "stt", timeout=600)


def test_unloadable_model_stays_unhealthy_and_the_gateway_names_it(
    compose: Compose, docker: Docker, url: str, auth: dict[str, str], tmp_path: Path
):
    broken = tmp_path / "compose.broken-llm.yml"
    broken.write_text(
        json.dumps(
            {
                "services": {
                    "llm": {
                        "environment": {"CHORUS_LLM_MODEL": "/models/missing.gguf"},
                        "healthcheck": {"interval": "2s", "start_period": "1s", "retries": 2},
                    }
                }
            }
        )
    )
    with_broken = Compose(docker, compose.project, compose.env, files=(*compose.files, broken))
    with_broken("up", "-d", "--no-deps", "llm", timeout=300)
    try:
        deadline = time.monotonic() + 120
        while (health := _llm_health(compose)) != "unhealthy":
            assert time.monotonic() < deadline, f"llm health stayed {health!r}"
            time.sleep(2)
        logs = compose("logs", "llm").stdout
        assert "missing.gguf" in logs and "cannot serve" in logs, logs[-3000:]
        started = time.monotonic()
        reply = requests.post(
            f"{url}/v1/chat/completions",
            headers=auth,
            json={"model": "gemma-3-270m", "messages": [{"role": "user", "content": "Hi"}]},
            timeout=120,
        )
        assert time.monotonic() - started < 60
        assert reply.status_code == 503, reply.text
        message = reply.json()["error"]["message"]
        assert "text generation service is unavailable" in message, message
    finally:
        compose("up", "-d", "--no-deps", "--wait", "--wait-timeout", "300", "llm", timeout=600)


def test_no_secret_in_any_image(docker: Docker, compose: Compose):
    for image in IMAGES.values():
        history = docker.run("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
        config = docker.run("image", "inspect", "--format", "{{json .Config}}", image).stdout
        for text in (history, config):
            assert CANARY_KEY not in text
            assert not re.search(r"(API_KEY|SECRET|TOKEN|PASSWORD)=\S", text), (image, text)
        files = docker.run(
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            image,
            "-c",
            "ls /app /src 2>/dev/null; test ! -e /app/secrets.env",
            check=False,
        )
        assert files.returncode == 0, (image, files.stdout)
    assert CANARY_KEY not in compose("logs").stdout


def test_down_leaves_nothing_behind(docker: Docker, compose: Compose):
    """Runs last in this module: the suite is removed here (the fixture's own down is a no-op)."""
    compose("down", "-v", "--remove-orphans", "--timeout", "30", timeout=300)
    label = f"label=com.docker.compose.project={compose.project}"
    for kind in ("container", "network", "volume"):
        listing = ["ps", "-a"] if kind == "container" else [kind, "ls"]
        left = docker.run(*listing, "--filter", label, "--format", "{{.ID}}").stdout.strip()
        assert not left, f"{kind}s left behind: {left}"


# --- helpers -------------------------------------------------------------------------------------


def _in_container(docker: Docker, container: str, url: str) -> str:
    code = (
        f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    )
    return docker.run("exec", container, "python", "-c", code).stdout


def _transcribe_count(docker: Docker, container: str) -> float:
    text = _in_container(docker, container, "http://127.0.0.1:9151/metrics")
    return sum(
        float(m.group(1))
        for m in re.finditer(
            r'^chorus_grpc_requests_total\{[^}]*method="[^"]*Transcribe"[^}]*\} (\S+)$',
            text,
            re.MULTILINE,
        )
    )


def _wait_envoy_hosts(docker: Docker, compose: Compose, cluster: str, count: int) -> None:
    """Until Envoy's admin API shows ``count`` healthy hosts in ``cluster`` (DNS refresh and
    active health checks take a few seconds after a scale-up)."""
    envoy = compose.containers("envoy")[0]["Name"]
    deadline = time.monotonic() + 120
    while True:
        text = _in_container(docker, envoy, "http://127.0.0.1:9901/clusters")
        healthy = {
            m.group(1)
            for m in re.finditer(rf"^{cluster}::([\d.]+:\d+)::health_flags::healthy$", text, re.M)
        }
        if len(healthy) >= count:
            return
        assert time.monotonic() < deadline, f"Envoy sees {healthy} for {cluster}"
        time.sleep(1)


def _llm_health(compose: Compose) -> str:
    containers = compose.containers("llm")
    return str(containers[0].get("Health", "")) if containers else ""
