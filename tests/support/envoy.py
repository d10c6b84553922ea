"""Real Envoy on loopback for tests (the same code `make run ENVOY=1` uses), and replicas of a
service to put behind it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from devtools.envoy import EnvoyProcess, running_envoy
from devtools.processes import ServiceProcess, free_port
from services.catalog import BY_NAME

__all__ = ["REPLICA_ENV", "EnvoyProcess", "replicas", "running_envoy"]

REPLICA_ENV: dict[str, dict[str, str]] = {
    "stt": {
        "CHORUS_STT_MODEL": "whisper-tiny.en",
        "CHORUS_STT_EXTRA_MODELS": "[]",
        "CHORUS_STT_BEAM_SIZE": "1",
        "CHORUS_STT_CPU_THREADS": "1",
        "CHORUS_STT_MAX_QUEUE": "64",
        "CHORUS_STT_GRACE_SECONDS": "2",
    },
    "tts": {
        "CHORUS_TTS_BACKEND": "piper",
        "CHORUS_TTS_MAX_QUEUE": "64",
        "CHORUS_TTS_GRACE_SECONDS": "2",
    },
    "llm": {
        "CHORUS_LLM_BACKEND": "llama-cpp",
        "CHORUS_LLM_MODEL": "gemma-3-270m",
        "CHORUS_LLM_MAX_WORKERS": "1",
        "CHORUS_LLM_MAX_QUEUE": "16",
        "CHORUS_LLM_MAX_TOKENS_LIMIT": "1024",
        "CHORUS_LLM_CPU_THREADS": "1",
    },
    "image": {
        "CHORUS_IMAGE_BACKEND": "diffusers",
        "CHORUS_IMAGE_MAX_WORKERS": "1",
        "CHORUS_IMAGE_MAX_QUEUE": "16",
        "CHORUS_IMAGE_MAX_PROMPT_CHARS": "200",
        "CHORUS_IMAGE_DEFAULT_WIDTH": "64",
        "CHORUS_IMAGE_DEFAULT_HEIGHT": "64",
        "CHORUS_IMAGE_DEFAULT_STEPS": "4",
        "CHORUS_IMAGE_CPU_THREADS": "1",
    },
}
"""One small replica of each model kind (one CPU thread, Whisper tiny.en, the offline Piper and
Gemma, a tiny image pipeline whose folder the caller names in ``CHORUS_IMAGE_MODEL``), so that
several of each fit two cores behind one Envoy: tests/test_envoy.py, tests/test_faults.py and
``make soak`` (bench/soak_suite.py) start them alike."""


@contextmanager
def replicas(
    kinds: Mapping[str, tuple[Mapping[str, str], int]], logs: Path, tag: str = "envoy"
) -> Iterator[dict[str, list[ServiceProcess]]]:
    """``count`` replicas of each kind (``kind -> (env, count)``), all started at once (they
    load in parallel) and all SERVING when yielded; stopped afterwards (SIGTERM)."""
    procs = {
        name: [
            ServiceProcess(
                BY_NAME[name],
                free_port(),
                free_port(),
                env=dict(env),
                log_path=logs / f"{name}-{tag}-{i}.log",
            )
            for i in range(count)
        ]
        for name, (env, count) in kinds.items()
    }
    every = [p for group in procs.values() for p in group]
    try:
        for p in every:
            p.start()
        for p in every:
            p.wait_ready()
        yield procs
    except BaseException:
        for p in every:
            if p.log_path and p.log_path.exists():
                print(f"--- {p.log_path.name}", p.log_path.read_text(errors="replace")[-3000:])
        raise
    finally:
        for p in every:
            p.stop(timeout=10)
