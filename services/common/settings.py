"""Settings every service shares; each service subclasses them with its own env prefix."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Server, limits and lifecycle knobs common to all model services.

    Every size, count and duration that bounds work is a field here (or in a subclass), so an
    operator can tune it from the environment, e.g. ``CHORUS_STT_MAX_QUEUE=2``.
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
    max_workers: int = Field(default=1, ge=1, le=64)
    """Threads that run the model at once. Model inference already uses every core per call."""
    max_queue: int = Field(default=8, ge=0, le=10_000)
    """Calls that may wait for a worker; one more is answered RESOURCE_EXHAUSTED at once."""
    max_streams: int = Field(default=16, ge=1, le=10_000)
    """Streaming calls open at once."""
    grace_seconds: float = Field(default=30.0, ge=0, le=3600)
    """On SIGTERM, how long in-flight calls may take to finish before they are cancelled."""
    reflection: bool = True
    """Serve the gRPC reflection service (grpcurl, grpcui)."""
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
    otlp_endpoint: str | None = None
    """OpenTelemetry collector (gRPC OTLP, e.g. http://otel-collector:4317); unset: no tracing."""
    trace_file: Path | None = None
    """Also write finished spans to this file, one JSON object per line (tests, debugging)."""
    log_level: str = "INFO"
    log_json: bool = False
    """One JSON object per log line (for log shippers) instead of plain text."""
