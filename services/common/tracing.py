"""OpenTelemetry tracing: on when an OTLP endpoint (or a span file) is configured, free otherwise.

The gRPC instrumentation propagates the trace context in call metadata, so the orchestrator's
span and the spans of every model service it calls form one trace per turn.
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["configure_tracing", "shutdown_tracing"]

log = logging.getLogger(__name__)
_configured = False


def configure_tracing(
    service: str, otlp_endpoint: str | None = None, span_file: Path | None = None
) -> bool:
    """Install a tracer provider and the grpc.aio instrumentation; call before creating servers
    or channels. Returns whether tracing is on."""
    global _configured
    if _configured or not (otlp_endpoint or span_file):
        return _configured
    from opentelemetry import trace
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    provider = TracerProvider(resource=Resource.create({"service.name": f"chorus-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    if span_file:
        # One JSON span per line: a local, dependency-free sink for tests and debugging.
        out = open(span_file, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
        provider.add_span_processor(
            SimpleSpanProcessor(
                ConsoleSpanExporter(
                    out=out, formatter=lambda span: span.to_json(indent=None) + "\n"
                )
            )
        )
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorServer().instrument()
    GrpcAioInstrumentorClient().instrument()
    _configured = True
    log.info("tracing on (%s)", "OTLP " + otlp_endpoint if otlp_endpoint else f"file {span_file}")
    return True


def shutdown_tracing() -> None:
    """Flush spans still buffered (BatchSpanProcessor) before the process exits."""
    if _configured:
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        if hasattr(provider, "shutdown"):
            provider.shutdown()
