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

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import requests
from websockets.sync.client import ClientConnection, connect

from devtools.processes import ROOT
from tests.conftest import IMAGE_LIMITS, LLM_LIMITS
from tests.support.gateway import sse_events

STT_ENV = {
    "CHORUS_STT_MODEL": "whisper-tiny.en",
    "CHORUS_STT_EXTRA_MODELS": "[]",
    "CHORUS_STT_BEAM_SIZE": "1",
    "CHORUS_STT_CPU_THREADS": "1",
    "CHORUS_STT_MAX_QUEUE": "64",
    "CHORUS_STT_GRACE_SECONDS": "2",
}
TTS_ENV = {"CHORUS_TTS_BACKEND": "piper", "CHORUS_TTS_MAX_QUEUE": "64"}
LLM_ENV = {
    **LLM_LIMITS,
    "CHORUS_LLM_BACKEND": "llama-cpp",
    "CHORUS_LLM_MODEL": "gemma-3-270m",
    "CHORUS_LLM_CPU_THREADS": "1",
    "CHORUS_LLM_MAX_QUEUE": "16",
    "CHORUS_LLM_LOG_LEVEL": "INFO",
}
IMAGE_ENV = {
    **IMAGE_LIMITS,
    "CHORUS_IMAGE_BACKEND": "diffusers",
    "CHORUS_IMAGE_CPU_THREADS": "1",
    "CHORUS_IMAGE_MAX_QUEUE": "16",
    "CHORUS_IMAGE_LOG_LEVEL": "INFO",
}
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
        _receive_until(socket, "session.created")
        stream = requests.post(
            f"{url}/api/turns",
            json={"text": "Tell me a long story about a lighthouse.", "max_tokens": 400},
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


def _ws_connect(url: str, **kwargs: Any) -> ClientConnection:
    headers = kwargs.pop("headers", {"Authorization": f"Bearer {API_KEY}"})
    return connect(
        url.replace("http://", "ws://") + "/v1/realtime?model=chorus",
        additional_headers=headers,
        open_timeout=30,
        **kwargs,
    )


def _receive_until(ws: ClientConnection, kind: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        event = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if event["type"] == kind:
            return dict(event)
