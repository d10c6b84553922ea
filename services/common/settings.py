"""Settings every service shares; each service subclasses them with its own env prefix.

Two layers, so a service inherits only the knobs it honours: ``ServerSettings`` is what every
gRPC server has (the orchestrator stops there), ``ModelServiceSettings`` adds what only a
service that runs models has (workers, queue, preload, idle unload, threads). ``ApiSettings``
is the one shape of a backend that calls a remote API instead of running a model here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ApiSettings", "BackendServiceSettings", "ModelServiceSettings", "ServerSettings"]


class ServerSettings(BaseSettings):
    """Server knobs common to every Chorus gRPC service.

    Every size, count and duration that bounds work is a field here (or in a subclass), so an
    operator can tune it from the environment, e.g. ``CHORUS_ORCH_GRACE_SECONDS=10``. Nested
    settings (a backend's section) use ``__``: ``CHORUS_TTS_PIPER__SPIN_WAIT=true``.
    """

    model_config = SettingsConfigDict(extra="ignore", env_nested_delimiter="__")

    host: str = "127.0.0.1"
    """Address to bind. Loopback by default; containers set 0.0.0.0."""
    port: int = Field(default=0, ge=0, le=65535)
    """gRPC port; 0 picks a free one (the chosen port is logged)."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; unset disables it."""
    max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    """Largest gRPC message accepted or sent; bigger ones get RESOURCE_EXHAUSTED from gRPC."""
    grace_seconds: float = Field(default=30.0, ge=0, le=3600)
    """On SIGTERM, how long in-flight calls may take to finish before they are cancelled."""
    reflection: bool = True
    """Serve the gRPC reflection service (grpcurl, grpcui)."""
    otlp_endpoint: str | None = None
    """OpenTelemetry collector (gRPC OTLP, e.g. http://otel-collector:4317); unset: no tracing."""
    trace_file: Path | None = None
    """Also write finished spans to this file, one JSON object per line (tests, debugging)."""
    log_level: str = "INFO"
    log_json: bool = False
    """One JSON object per log line (for log shippers) instead of plain text."""


class ModelServiceSettings(ServerSettings):
    """What a service that runs models adds: its worker pool, queue and model lifecycle."""

    max_workers: int = Field(default=1, ge=1, le=64)
    """Threads that run the model at once. Model inference already uses every core per call."""
    max_queue: int = Field(default=8, ge=0, le=10_000)
    """Calls that may wait for a worker; one more is answered RESOURCE_EXHAUSTED at once."""
    preload: bool = True
    """Load the default model at start, so SERVING means ready to answer."""
    exit_on_load_failure: bool = False
    """When the default model cannot load: False (containers) keeps the process up, NOT_SERVING,
    with the reason in its log, so Compose and Kubernetes show it unhealthy instead of a crash
    loop; True (``make run``) exits at once, so the launcher reports it."""
    idle_unload_seconds: float = Field(default=0.0, ge=0)
    """Unload a model unused for this long (0: never); it is reloaded on the next call."""
    cpu_threads: int = Field(default=0, ge=0, le=256)
    """Threads a model may use for one call; 0: the number of cores."""


class BackendServiceSettings(ModelServiceSettings):
    """A model service whose engine is picked by ``backend`` from its kind's registry.

    What type checkers see: at run time each kind inherits
    ``BACKENDS.settings_base(BackendServiceSettings, default=...)`` instead, which adds the
    check of ``backend`` against the registry and one nested section per backend (a generated
    class that type checkers cannot follow; sections are read through ``Registry.options``).
    """

    backend: str


class ApiSettings(BaseModel):
    """A backend that calls a remote API (``CHORUS_STT_OPENAI_API__*``, ``CHORUS_LLM_OPENAI__*``,
    ...): where it is, how to authenticate, how long to wait, how often to retry.

    The key comes from ``key`` or from ``key_file`` (a mounted secret), never both: setting
    both fails at start, as Docker's official images do for ``X`` and ``X_FILE``, because a
    silent winner would hide a stale key in whichever place lost. An empty value counts as
    unset (``secrets.env.example`` lists every key empty). Keys stay ``SecretStr`` and are never
    logged; ``api_key()`` is the one place they are read.
    """

    base_url: str = "https://api.openai.com/v1"
    """The API root, e.g. ``http://127.0.0.1:8000/v1`` for a local OpenAI-compatible server."""
    key: SecretStr | None = None
    """The API key, sent as a bearer token. Prefer ``key_file`` in deployments."""
    key_file: Path | None = None
    """A file holding the key (a mounted secret); read when the backend is built, stripped."""
    timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    """Limit on one remote request, connecting included."""
    max_retries: int = Field(default=2, ge=0, le=10)
    """Retries, with backoff, of a request that failed to connect or got 408, 409, 429 or 5xx;
    other errors are never retried."""

    @field_validator("key")
    @classmethod
    def _empty_key_is_unset(cls, key: SecretStr | None) -> SecretStr | None:
        return key if key is not None and key.get_secret_value() else None

    @model_validator(mode="after")
    def _one_key_source(self) -> ApiSettings:
        if self.key is not None and self.key_file is not None:
            raise ValueError("set key or key_file, not both")
        return self

    def api_key(self) -> SecretStr | None:
        """The key, from ``key_file`` (read now, stripped) or ``key``; None when there is none
        (an empty file included), for a remote that wants no authentication."""
        if self.key_file is not None:
            text = self.key_file.read_text().strip()
            return SecretStr(text) if text else None
        return self.key
