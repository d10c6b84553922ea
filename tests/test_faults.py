"""Faults under load (issue 16, part 4), on real processes: two replicas of each model service
behind a real Envoy, one orchestrator and one gateway given only Envoy's address.

* A replica of each kind killed (SIGKILL) in the middle of a burst of its calls: Envoy retries
  every call that had not been answered yet on the other replica; a stream cut half-way fails
  with UNAVAILABLE; a turn whose stage's stream was cut ends with a TurnError naming the stage
  (the image stage's is not fatal: the reply goes on); the replica restarted on its port gets
  calls again.
* A slow downstream (Envoy's fault filter holding every LLM call 10 s): turns with a short
  deadline end at their deadline, nothing piles up (no call held in Envoy, none in flight in
  the orchestrator afterwards, none reached a replica), and a turn passes once the delay is off.
* The orchestrator restarted (SIGTERM) under open /v1/realtime sockets: each is closed at once
  with a close code a client acts on (1012, service restart), and reconnecting gets a working
  session once the orchestrator is back; no gateway thread is left holding a session.
* A full disk under the artifact store (a small tmpfs filled up): a stored turn still streams
  its text and audio, and says "no space left on device" in a non-fatal error; once space is
  freed, storing works again.
* Ctrl-C on ``make run`` (the launcher as ``make run`` starts it, SIGINT to its whole process
  group as a terminal sends it) after a browser-like client left a realtime socket, an SSE
  stream and keep-alive connections open: everything exits within seconds, exit code 0.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
import requests
from chorus.v1 import (
    common_pb2,
    image_pb2,
    image_pb2_grpc,
    llm_pb2,
    llm_pb2_grpc,
    orchestrator_pb2_grpc,
    stt_pb2,
    stt_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)
from chorus.v1 import orchestrator_pb2 as pb
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from devtools.processes import ROOT, ServiceProcess, free_port
from services.catalog import BY_NAME
from tests.conftest import IMAGE_LIMITS, LLM_LIMITS, TURN_LIMITS
from tests.support.envoy import REPLICA_ENV, EnvoyProcess, replicas, running_envoy
from tests.support.gateway import GatewayProcess, realtime_socket, receive_until, sse_events
from tests.support.services import metric_value, scrape, started
from tests.support.speech import espeak

STT_ENV = REPLICA_ENV["stt"]
TTS_ENV = REPLICA_ENV["tts"]
LLM_ENV = {**LLM_LIMITS, **REPLICA_ENV["llm"], "CHORUS_LLM_LOG_LEVEL": "INFO"}
IMAGE_ENV = {**IMAGE_LIMITS, **REPLICA_ENV["image"], "CHORUS_IMAGE_LOG_LEVEL": "INFO"}
KINDS = ("stt", "tts", "llm", "image")
API_KEY = "sk-chorus-faults-3b9d"


# --- Ctrl-C on `make run` ----------------------------------------------------------------------
# First in the module: it starts a whole suite of its own, before the shared one below exists.


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_ctrl_c_on_make_run_stops_everything_at_once(logs: Path, tiny_sd: Path) -> None:
    """The launcher as ``make run`` runs it (free ports, small models), a page's worth of use
    (the page and its API calls on a keep-alive session, an SSE turn stream and a realtime
    socket left open), then SIGINT to the whole process group, as Ctrl-C in a terminal sends
    it: every process is gone within seconds (gunicorn's graceful timeout is 30 s) and the
    launcher exits 0, so ``make`` reports no error."""
    run_dir = logs / "ctrl-c"
    env = {
        **os.environ,
        **STT_ENV,
        **TTS_ENV,
        **LLM_ENV,
        **IMAGE_ENV,
        "CHORUS_IMAGE_MODEL": str(tiny_sd),
        "CHORUS_IMAGE_PRELOAD": "false",  # unused here: SERVING without its 10 s load
        "CHORUS_GATEWAY_WORKERS": "2",
        "CHORUS_GATEWAY_THREADS": "8",
        "CHORUS_ENVOY": "",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "gen"), str(ROOT)]),
    }
    out = (logs / "ctrl-c-launcher.log").open("wb")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "devtools.launcher", "--run-dir", str(run_dir), "--free-ports"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    pids: list[psutil.Process] = []
    socket: ClientConnection | None = None
    stream: requests.Response | None = None
    try:
        url = _wait_for_serving(launcher, logs / "ctrl-c-launcher.log", timeout=240)
        browser = requests.Session()  # keep-alive, as a browser's connections
        assert browser.get(f"{url}/api/interface/", timeout=30).status_code == 200
        assert browser.get(f"{url}/api/config", timeout=30).status_code == 200
        assert browser.get(f"{url}/api/voices", timeout=30).status_code == 200
        socket = _ws_connect(url, headers={})
        receive_until(socket, "session.created")
        stream = requests.post(
            f"{url}/api/turns",
            json={"text": "Tell me a long story about a lighthouse.", "max_tokens": 60},
            stream=True,
            timeout=60,
        )
        assert stream.status_code == 200
        next(sse_events(stream))  # the turn is under way; the stream stays open
        pids = _tree(launcher.pid)
        assert len(pids) >= 7, pids  # launcher, 5 services, gunicorn's master and worker(s)
        started_at = time.monotonic()
        os.killpg(launcher.pid, signal.SIGINT)
        code = launcher.wait(60)
        took = time.monotonic() - started_at
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(p.is_running() for p in pids):
            time.sleep(0.1)
        left = [p for p in pids if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:
        for closeable in (socket, stream):
            if closeable is not None:
                closeable.close()
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait(30)
        for p in pids:
            if p.is_running():
                p.kill()
        out.close()
    print(f"Ctrl-C: launcher exited {code} after {took:.1f} s")
    log = (logs / "ctrl-c-launcher.log").read_text(errors="replace")
    assert code == 0, log[-3000:]
    assert not left, left
    assert took < 15, (took, log[-3000:])


def _wait_for_serving(launcher: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    """The gateway's URL, once the launcher says the suite is SERVING."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        for line in text.splitlines():
            if "Chorus is SERVING: open " in line:
                return line.split("open ")[1].split("/api/")[0].strip()
        if launcher.poll() is not None:
            raise AssertionError(f"the launcher exited {launcher.returncode}: {text[-3000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"the suite was not SERVING within {timeout:.0f} s")


_ws_connect = functools.partial(realtime_socket, api_key=API_KEY)


# --- the shared suite ---------------------------------------------------------------------------

METHODS = {
    "stt": "/chorus.v1.SpeechToText/Transcribe",
    "tts": "/chorus.v1.TextToSpeech/Synthesize",
    "llm": "/chorus.v1.TextGeneration/Generate",
    "image": "/chorus.v1.ImageGeneration/Generate",
}
"""The call each burst makes (unary for speech, server-streaming for text and images)."""
TURN_METHODS = {
    "stt": "/chorus.v1.SpeechToText/StreamingTranscribe",
    "tts": "/chorus.v1.TextToSpeech/StreamingSynthesize",
    "llm": "/chorus.v1.TextGeneration/Generate",
    "image": "/chorus.v1.ImageGeneration/Generate",
}
"""The call a turn makes to each kind."""
CONVERSE = "/chorus.v1.Orchestrator/Converse"
TTS_TEXT = "The lighthouse keeper climbed the stairs. The lamp was bright, and the sea was calm."


@dataclass
class Suite:
    models: dict[str, list[ServiceProcess]]
    orchestrator: ServiceProcess
    gateway: GatewayProcess
    envoy: EnvoyProcess
    artifacts: Path
    tmpfs: bool
    """Whether ``artifacts`` is a small tmpfs of its own (a disk this test may fill)."""
    clip: bytes
    speech: bytes
    """A longer utterance, 16-bit PCM (``speech_rate`` Hz), for a turn streamed as it is spoken."""
    speech_rate: int


@contextmanager
def _small_tmpfs(path: Path, size: str) -> Iterator[bool]:
    """A tmpfs of ``size`` mounted on ``path`` (root, as on the test machines); False (and a
    plain folder) where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
            capture_output=True,
            timeout=30,
            check=False,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def suite(logs: Path, tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    root = tmp_path_factory.mktemp("faults")
    clip = espeak("Hello world.", "en", root / "hello.wav")
    long_wav = espeak(
        "The keeper of the lighthouse climbed the long stairs every evening, lit the great "
        "lamp, and watched the ships pass slowly through the dark and stormy sea.",
        "en",
        root / "long.wav",
    )
    with wave.open(io.BytesIO(long_wav)) as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    env = {
        "stt": (STT_ENV, 2),
        "tts": (TTS_ENV, 2),
        "llm": (LLM_ENV, 2),
        "image": ({**IMAGE_ENV, "CHORUS_IMAGE_MODEL": str(tiny_sd)}, 2),
    }
    with ExitStack() as stack:
        models = stack.enter_context(replicas(env, logs, tag="faults"))
        tmpfs = stack.enter_context(_small_tmpfs(root / "artifacts", "8m"))
        orchestrator = ServiceProcess(
            BY_NAME["orchestrator"],
            free_port(),
            free_port(),
            log_path=logs / "orchestrator-faults.log",
        )
        envoy = stack.enter_context(
            running_envoy({**models, "orchestrator": [orchestrator]}, logs, tag="faults")
        )
        for kind, procs in models.items():
            envoy.wait_hosts(kind, healthy=[p.port for p in procs])
        orchestrator.env = {
            "CHORUS_ORCH_ENVOY_ADDRESS": envoy.address,
            "CHORUS_ORCH_SESSION_STREAM_SECONDS": "30",
            "CHORUS_ARTIFACTS_FOLDER": str(root / "artifacts"),
            "CHORUS_CONVERSATIONS_URL": f"sqlite:///{root / 'conversations.sqlite3'}",
            **TURN_LIMITS,
        }
        stack.enter_context(started(orchestrator))
        envoy.wait_hosts("orchestrator", healthy=[orchestrator.port])
        gateway_env = {
            "CHORUS_GATEWAY_ENVOY_ADDRESS": envoy.address,
            "CHORUS_GATEWAY_API_KEY": API_KEY,
            "CHORUS_GATEWAY_WORKERS": "1",
            "CHORUS_GATEWAY_THREADS": "16",
            "CHORUS_GATEWAY_REALTIME_MAX_SESSIONS": "4",
            **TURN_LIMITS,
        }
        gateway = GatewayProcess(gateway_env, logs / "gateway-faults.log", ready="/readyz")
        stack.enter_context(started(gateway, 60))
        yield Suite(
            models, orchestrator, gateway, envoy, root / "artifacts", tmpfs, clip, pcm, rate
        )


def _in_flight(proc: ServiceProcess, method: str) -> float:
    try:
        return metric_value(scrape(proc), "chorus_grpc_in_flight", method=method)
    except OSError:  # killed
        return 0.0


def _served(proc: ServiceProcess, method: str) -> float:
    """Calls of ``method`` the replica has answered (0 for one that was killed)."""
    if proc.process is None or proc.process.poll() is not None:
        return 0.0
    return metric_value(scrape(proc), "chorus_grpc_requests_total", method=method)


# --- a replica killed -----------------------------------------------------------------------


@dataclass
class Outcome:
    code: str
    messages: int
    """Messages received before the call ended (a unary reply counts one)."""


def _call(kind: str, channel: grpc.Channel, clip: bytes) -> Outcome:
    """One idempotent call of ``kind``; its status and how far it got."""
    messages = 0
    try:
        if kind == "stt":
            r = stt_pb2_grpc.SpeechToTextStub(channel).Transcribe(
                stt_pb2.TranscribeRequest(audio=clip, language="en"), timeout=60
            )
            assert "hello" in r.text.lower(), r.text
            messages = 1
        elif kind == "tts":
            s = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(
                tts_pb2.SynthesizeRequest(text=TTS_TEXT), timeout=60
            )
            assert len(s.audio) > 10_000
            messages = 1
        elif kind == "llm":
            request = llm_pb2.GenerateTextRequest(
                messages=[
                    llm_pb2.ChatMessage(
                        role=llm_pb2.CHAT_ROLE_USER, content="Count from one to thirty."
                    )
                ],
                max_tokens=40,
                temperature=0,
            )
            for _ in llm_pb2_grpc.TextGenerationStub(channel).Generate(request, timeout=60):
                messages += 1
        else:
            request_ = image_pb2.GenerateImageRequest(
                prompt="a red lighthouse", width=64, height=64, steps=12, num_images=1
            )
            for _ in image_pb2_grpc.ImageGenerationStub(channel).Generate(request_, timeout=60):
                messages += 1
    except grpc.RpcError as error:
        return Outcome(error.code().name, messages)
    return Outcome("OK", messages)


def _burst(
    suite: Suite, kind: str, count: int, concurrency: int, during: Callable[[list[int]], Any]
) -> list[Outcome]:
    done = [0]
    lock = threading.Lock()
    with grpc.insecure_channel(suite.envoy.address) as channel:

        def one(_: int) -> Outcome:
            outcome = _call(kind, channel, suite.clip)
            with lock:
                done[0] += 1
            return outcome

        with ThreadPoolExecutor(concurrency + 1) as pool:
            side = pool.submit(during, done)
            outcomes = list(pool.map(one, range(count)))
            side.result(timeout=60)
    return outcomes


def _kill_busy(procs: list[ServiceProcess], method: str, timeout: float = 10) -> ServiceProcess:
    """SIGKILL the first replica seen with a ``method`` call in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.process is not None and _in_flight(proc, method) > 0:
                proc.process.kill()
                proc.process.wait(10)
                return proc
        time.sleep(0.01)
    raise AssertionError(f"no replica had a {method} call in flight within {timeout:.0f} s")


def _restart(suite: Suite, kind: str, proc: ServiceProcess) -> float:
    """Start ``proc`` again on its port; seconds until Envoy sees every replica healthy."""
    started_at = time.monotonic()
    proc.observed_health.clear()
    proc.start()
    proc.wait_ready(120)
    suite.envoy.wait_hosts(kind, healthy=[p.port for p in suite.models[kind]], timeout=60)
    return time.monotonic() - started_at


BURSTS = {"stt": (12, 4), "tts": (16, 4), "llm": (6, 3), "image": (6, 3)}
"""Calls per burst and how many at a time."""


@pytest.mark.parametrize("kind", KINDS)
def test_replica_killed_under_load(suite: Suite, kind: str) -> None:
    """kill -9 of one replica of ``kind`` in the middle of a burst of its calls: no call that
    had not been answered yet is lost (Envoy retries it on the other replica); a stream cut
    half-way fails UNAVAILABLE (it cannot be replayed). Then a turn whose call to ``kind`` is
    cut: it ends at once with a TurnError naming the stage. The replica brought back on its
    port gets calls again."""
    envoy, procs, method = suite.envoy, suite.models[kind], METHODS[kind]
    victim, survivor = procs
    retries = envoy.stat(f"cluster.{kind}.upstream_rq_retry")
    killed_at: list[float] = []

    def kill(done: list[int]) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (done[0] >= 2 and _in_flight(victim, method)):
            time.sleep(0.01)
        assert victim.process is not None
        victim.process.kill()
        victim.process.wait(10)
        killed_at.append(time.monotonic())

    count, concurrency = BURSTS[kind]
    outcomes = _burst(suite, kind, count, concurrency, kill)
    failed = [o for o in outcomes if o.code != "OK"]
    print(f"{kind}: {count} calls, {len(failed)} failed {failed}")
    print(f"{kind}: retries {envoy.stat(f'cluster.{kind}.upstream_rq_retry') - retries}")
    if kind in ("stt", "tts"):  # unary: every call retried
        assert not failed, outcomes
        assert envoy.stat(f"cluster.{kind}.upstream_rq_retry") > retries
    else:  # streams: only the one the victim was streaming (one worker) may fail, mid-way
        assert len(failed) <= 1, outcomes
        assert all(o.code in ("UNAVAILABLE", "INTERNAL") and o.messages >= 1 for o in failed)
    envoy.wait_hosts(kind, healthy=[survivor.port], unhealthy=[victim.port])
    print(f"{kind}: restarted and healthy in Envoy after {_restart(suite, kind, victim):.1f} s")
    before = _served(victim, method)
    # Rounds until a deadline, not a count: a fast call (an LLM's, ~0.1 s) ran 5 rounds inside
    # the seconds Envoy may still keep the host out after its outlier ejection.
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(envoy.address) as channel, ThreadPoolExecutor(2) as pool:
        while time.monotonic() < deadline:
            again = list(pool.map(lambda _: _call(kind, channel, suite.clip), range(2)))
            assert all(o.code == "OK" for o in again), again
            if _served(victim, method) > before:
                break
    assert _served(victim, method) > before, "the restarted replica got no call"

    # A turn whose stream to `kind` is cut: the stage's error, not a hang. (The replica it
    # kills stays down: the other one serves the rest of the module.)
    events, error, _, took = _turn_cut(suite, kind)
    errors = [e.error for e in events if e.HasField("error")]
    print(f"{kind}: turn ended after {took:.1f} s: {error and error.code()} {errors}")
    stage = STAGES[kind]
    if kind == "image":  # optional stage: the reply goes on
        assert error is None, error
        assert [(e.stage, e.fatal) for e in errors] == [(stage, False)], errors
        kinds = [e.WhichOneof("event") for e in events]
        assert "reply_final" in kinds and kinds[-1] == "turn_timings", kinds
        assert "image_result" not in kinds
    elif errors or kind in ("stt", "llm"):
        # A speech chunk may be retried (killed before its first byte): then nothing failed.
        assert error is not None and error.code() != grpc.StatusCode.DEADLINE_EXCEEDED, error
        assert [(e.stage, e.fatal) for e in errors] == [(stage, True)], errors
    # A cut stream (gRPC's INTERNAL "Stream removed (RST_STREAM ...)") is the service's loss,
    # said so: UNAVAILABLE, a retry may pass; the message names the service.
    assert all(e.code == "UNAVAILABLE" for e in errors), errors
    assert all(e.message.startswith(f"{SERVICE_NAMES[kind]}: ") for e in errors), errors
    assert all("cut off mid-stream" in e.message for e in errors), errors
    assert took < 60


STAGES = {
    "stt": pb.STAGE_TRANSCRIPTION,
    "tts": pb.STAGE_SPEECH,
    "llm": pb.STAGE_REPLY,
    "image": pb.STAGE_IMAGE,
}
SERVICE_NAMES = {
    "stt": "speech-to-text",
    "tts": "text-to-speech",
    "llm": "text-generation",
    "image": "image-generation",
}
TRIGGERS = {
    "stt": "transcript_partial",
    "tts": "audio_chunk",
    "llm": "reply_delta",
    "image": "image_progress",
}
"""The event after which the turn's call to each kind is under way (and is cut)."""


def _turn_requests(suite: Suite, kind: str) -> Iterator[pb.ConverseRequest]:
    if kind == "stt":
        rate = suite.speech_rate
        config = pb.TurnConfig(
            input_mode=pb.INPUT_MODE_SPEECH,
            language="en",
            input_audio_format=common_pb2.RawAudioFormat(
                encoding=common_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate
            ),
            options=pb.TurnOptions(max_tokens=20, temperature=0, text_only=True),
        )
        yield pb.ConverseRequest(config=config)
        step = rate // 10 * 2  # 100 ms, sent as it would be spoken
        for i in range(0, len(suite.speech), step):
            time.sleep(0.1)
            yield pb.ConverseRequest(audio=suite.speech[i : i + step])
        yield pb.ConverseRequest(end_of_input=pb.EndOfInput())
        return
    options = {
        "tts": pb.TurnOptions(max_tokens=120, temperature=0),
        "llm": pb.TurnOptions(max_tokens=400, temperature=0, text_only=True),
        "image": pb.TurnOptions(
            max_tokens=10,
            temperature=0,
            text_only=True,
            image_steps=50,
            image_width=128,
            image_height=128,
        ),
    }[kind]
    config = pb.TurnConfig(
        input_mode=pb.INPUT_MODE_TEXT,
        image_mode=pb.IMAGE_MODE_ON if kind == "image" else pb.IMAGE_MODE_OFF,
        options=options,
    )
    yield pb.ConverseRequest(config=config)
    yield pb.ConverseRequest(
        text="Tell me a long story about the old lighthouse keeper and the stormy sea."
    )
    yield pb.ConverseRequest(end_of_input=pb.EndOfInput())


def _turn_cut(
    suite: Suite, kind: str
) -> tuple[list[pb.TurnEvent], grpc.RpcError | None, ServiceProcess, float]:
    """A turn through Envoy and the orchestrator; once its call to ``kind`` is under way, the
    replica serving it is killed. Its events, its error, the killed replica, its duration."""
    events: list[pb.TurnEvent] = []
    error: grpc.RpcError | None = None
    cut: ServiceProcess | None = None
    started_at = time.monotonic()
    with grpc.insecure_channel(suite.envoy.address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        try:
            for event in stub.Converse(_turn_requests(suite, kind), timeout=120):
                events.append(event)
                if cut is None and event.WhichOneof("event") == TRIGGERS[kind]:
                    cut = _kill_busy(suite.models[kind], TURN_METHODS[kind])
        except grpc.RpcError as err:
            error = err
    assert cut is not None, [e.WhichOneof("event") for e in events]
    return events, error, cut, time.monotonic() - started_at


# --- a slow downstream --------------------------------------------------------------------------


def _text_turn(
    address: str, timeout: float, text: str = "Say hello.", **config: Any
) -> tuple[list[pb.TurnEvent], grpc.RpcError | None, float]:
    """One text turn through ``address`` with a deadline of ``timeout``: its events, its
    error (None: it succeeded) and how long it took."""
    config.setdefault("options", pb.TurnOptions(max_tokens=16, temperature=0, text_only=True))
    requests_ = [
        pb.ConverseRequest(config=pb.TurnConfig(input_mode=pb.INPUT_MODE_TEXT, **config)),
        pb.ConverseRequest(text=text),
        pb.ConverseRequest(end_of_input=pb.EndOfInput()),
    ]
    events: list[pb.TurnEvent] = []
    started_at = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        try:
            for event in stub.Converse(iter(requests_), timeout=timeout):
                events.append(event)
        except grpc.RpcError as error:
            return events, error, time.monotonic() - started_at
    return events, None, time.monotonic() - started_at


def test_slow_downstream_hits_deadlines_without_piling_up(suite: Suite) -> None:
    """Every LLM call held 10 s in Envoy (its fault filter, switched on at run time): turns
    with a 3 s deadline end at their deadline with DEADLINE_EXCEEDED (the reply stage named
    when the orchestrator says it first), the held calls go once their callers give up (none
    reaches a replica), nothing is left in flight; with the delay off a turn passes again."""
    envoy, deadline = suite.envoy, 3.0
    generated = sum(_served(p, METHODS["llm"]) for p in suite.models["llm"])
    held: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            held.append(envoy.faults_active())

    envoy.set_delay("llm", 10_000)
    try:
        with ThreadPoolExecutor(7) as pool:
            watcher = pool.submit(watch)
            outcomes = list(pool.map(lambda _: _text_turn(envoy.address, deadline), range(6)))
            stop.set()
            watcher.result(timeout=10)
    finally:
        envoy.clear_faults("llm")
    named = 0
    for events, error, took in outcomes:
        errors = [e.error for e in events if e.HasField("error")]
        print(f"slow llm: {error and error.code().name} after {took:.2f} s, {errors}")
        assert error is not None and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
        assert took < deadline + 10
        assert all(
            e.stage == pb.STAGE_REPLY and e.code == "DEADLINE_EXCEEDED" and e.fatal for e in errors
        ), errors
        named += bool(errors)
    # The orchestrator ends a turn just before its caller's deadline: the stage is named.
    assert named >= 1
    print(f"slow llm: at most {max(held)} calls held in Envoy at once")
    assert max(held) >= 1  # the delay held them in Envoy ...
    # ... until their callers gave up: nothing held, in flight, or sent to a replica later.
    orchestrator = suite.orchestrator
    settle = time.monotonic() + 15
    while time.monotonic() < settle and (
        envoy.faults_active() or envoy.active("llm") or _in_flight(orchestrator, CONVERSE)
    ):
        time.sleep(0.1)
    assert envoy.faults_active() == 0
    assert envoy.active("llm") == 0
    assert _in_flight(orchestrator, CONVERSE) == 0
    assert sum(_served(p, METHODS["llm"]) for p in suite.models["llm"]) == generated
    events, error, _ = _text_turn(envoy.address, 120)
    assert error is None and any(e.HasField("reply_final") for e in events), (error, events)


# --- the orchestrator restarted under live sessions ------------------------------------------


def _realtime_reply(ws: ClientConnection) -> dict[str, Any]:
    ws.send(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Say hello."}],
                },
            }
        )
    )
    ws.send(
        json.dumps(
            {
                "type": "response.create",
                "response": {"output_modalities": ["text"], "max_output_tokens": 12},
            }
        )
    )
    return receive_until(ws, "response.done", timeout=120)["response"]


def test_orchestrator_restart_closes_live_sessions_and_clients_reconnect(suite: Suite) -> None:
    """SIGTERM to the orchestrator under three open /v1/realtime sockets: each gets an error
    event and a close frame a client acts on (1013, try again later) within seconds, not
    after the drain's 30 s grace; the orchestrator exits at once. Brought back on its port,
    each client reconnects and gets a working session; the gateway holds no stale session
    (its limit is 4, three old plus three new would pass it)."""
    url, orchestrator = suite.gateway.url, suite.orchestrator
    sockets = [_ws_connect(url) for _ in range(3)]
    try:
        for ws in sockets:
            receive_until(ws, "session.created")
        assert _realtime_reply(sockets[0])["status"] == "completed"
        assert orchestrator.process is not None
        started_at = time.monotonic()
        orchestrator.process.send_signal(signal.SIGTERM)
        closes: list[tuple[int | None, str, float, list[str]]] = []
        for ws in sockets:
            seen: list[str] = []
            with pytest.raises(ConnectionClosed) as ended:
                while True:
                    event = json.loads(ws.recv(timeout=30))
                    seen.append(
                        event["type"] if event["type"] != "error" else event["error"]["message"]
                    )
            rcvd = ended.value.rcvd
            closes.append(
                (
                    rcvd and rcvd.code,
                    rcvd.reason if rcvd else "",
                    time.monotonic() - started_at,
                    seen,
                )
            )
        exit_code = orchestrator.process.wait(30)
        stopped = time.monotonic() - started_at
    finally:
        for ws in sockets:
            ws.close()
    print(f"orchestrator restart: closes {closes}; exited {exit_code} after {stopped:.1f} s")
    for code, reason, took, seen in closes:
        assert code == 1013 and reason, (code, reason)
        assert any("restarting" in s for s in seen), seen
        assert took < 10
    assert exit_code == 0 and stopped < 15

    started_at = time.monotonic()
    orchestrator.observed_health.clear()
    orchestrator.start()
    orchestrator.wait_ready(60)
    suite.envoy.wait_hosts("orchestrator", healthy=[orchestrator.port], timeout=30)
    back = time.monotonic() - started_at
    again = [_reconnect(url) for _ in range(3)]
    try:
        for ws in again:
            assert _realtime_reply(ws)["status"] == "completed"
    finally:
        for ws in again:
            ws.close()
    print(f"orchestrator restart: back in {back:.1f} s, 3 clients reconnected")


def _reconnect(url: str, timeout: float = 30) -> ClientConnection:
    """A client's reconnection: tries again while the session closes at once with 1013."""
    deadline = time.monotonic() + timeout
    while True:
        ws = _ws_connect(url)
        try:
            receive_until(ws, "session.created", timeout=30)
            return ws
        except ConnectionClosed:
            ws.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# --- a full disk under the artifact store -------------------------------------------------------


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; the file that does it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (1 << 20, 65536, 4096, 512, 1):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def test_full_disk_on_the_artifact_store(suite: Suite) -> None:
    """The artifact folder on a tmpfs filled to the last byte: a turn of a stored conversation
    still streams its text and its audio, and says in a non-fatal error that the artifact store
    is full (no space left on device); the orchestrator stays SERVING; with the space freed,
    the next turn stores its audio again."""
    if not suite.tmpfs:
        pytest.skip("no tmpfs could be mounted here (not root)")
    with grpc.insecure_channel(suite.envoy.address) as channel:
        conversation = orchestrator_pb2_grpc.ConversationsStub(channel).CreateConversation(
            pb.CreateConversationRequest(title="full disk"), timeout=30
        )
    spoken = pb.TurnOptions(max_tokens=24, temperature=0)
    filler = _fill(suite.artifacts)
    try:
        events, error, _ = _text_turn(
            suite.envoy.address, 120, conversation_id=conversation.id, options=spoken
        )
        assert suite.orchestrator.health() == 1  # SERVING
    finally:
        filler.unlink()
    assert error is None, error
    kinds = [e.WhichOneof("event") for e in events]
    errors = [e.error for e in events if e.HasField("error")]
    print(f"full disk: {errors}")
    assert "reply_final" in kinds and "turn_timings" in kinds, kinds
    audio = [e.audio_chunk for e in events if e.HasField("audio_chunk")]
    assert audio and all(len(a.audio) > 1000 for a in audio)  # the bytes, whatever was stored
    assert errors and all(not e.fatal and e.stage == pb.STAGE_STORAGE for e in errors), errors
    assert any(
        "artifact store" in e.message and "no space left on device" in e.message for e in errors
    ), errors
    stored = [e.stored for e in events if e.HasField("stored")]
    assert not stored or not stored[0].reply_audio_artifact_id

    events, error, _ = _text_turn(
        suite.envoy.address, 120, conversation_id=conversation.id, options=spoken
    )
    assert error is None, error
    assert not [e.error for e in events if e.HasField("error")]
    (stored_event,) = [e.stored for e in events if e.HasField("stored")]
    assert stored_event.reply_audio_artifact_id


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("(sqlite3.OperationalError) database or disk is full"),
    ],
)
async def test_a_full_disk_says_so(error: Exception) -> None:
    """A store's failure that is a full disk (its own OSError, or wrapped as SQLAlchemy wraps
    its driver's) is UNAVAILABLE saying "no space left on device"; other failures keep the
    generic message (their details stay in the log)."""
    from services.common.errors import Unavailable
    from services.orchestrator.storage import blocking

    def fails() -> None:
        try:
            raise error
        except Exception as inner:
            raise ValueError("the store's own wrapper") from inner

    with pytest.raises(Unavailable, match="artifact store is full \\(no space left on device\\)"):
        await blocking("artifact", fails)
    with pytest.raises(Unavailable, match="^the artifact store failed; try again$"):
        await blocking("artifact", lambda: 1 / 0)
