"""Test processes for the LLM and image services, and llama-cpp-python's own OpenAI server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from devtools.processes import ServiceProcess, free_port
from services.catalog import BY_NAME, Service
from tests.support.services import started

LLM_SPEC = BY_NAME["llm"]
IMAGE_SPEC = BY_NAME["image"]
CACHE_DIR = Path.home() / ".cache" / "chorus" / "models"


def gemma_gguf() -> Path:
    """The offline Gemma 3 270M GGUF, joined once into the shared model cache."""
    from services.llm.weights import resolve_gguf

    return resolve_gguf("gemma-3-270m", CACHE_DIR)


@contextmanager
def serving(
    spec: Service, env: Mapping[str, str], log_path: Path, timeout: float = 180.0
) -> Iterator[ServiceProcess]:
    """A started, SERVING service process; SIGTERM-stopped afterwards."""
    proc = ServiceProcess(spec, free_port(), free_port(), env=dict(env), log_path=log_path)
    with started(proc, timeout) as ready:
        yield ready


@contextmanager
def llama_openai_server(
    model: Path,
    api_key: str,
    log_path: Path,
    chat_format: str = "alpaca",
    threads: int = 0,
    timeout: float = 120.0,
) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1; yields its ``/v1`` base URL.

    The offline Gemma 270M is a *base* model: with the ``gemma`` chat format it echoes the
    question, while alpaca's "### Instruction / ### Response" layout gets it to answer; a stop
    at the next blank line (set on the LLM service) keeps the reply to that answer.
    """
    port = free_port()
    threads = threads or os.cpu_count() or 1
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--chat_format",
                chat_format,
                "--n_threads",
                str(threads),
                "--n_threads_batch",
                str(threads),
                "--n_ctx",
                "2048",
                "--api_key",
                api_key,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited with {process.returncode}:\n"
                    + log_path.read_text(errors="replace")[-3000:]
                )
            request = urllib.request.Request(
                f"{base_url}/models", headers={"Authorization": f"Bearer {api_key}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    json.load(response)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError("llama_cpp.server did not answer") from None
                time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
