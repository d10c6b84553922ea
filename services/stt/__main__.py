"""Run the STT service: ``python -m services.stt`` (configured by CHORUS_STT_* variables)."""

from chorus.v1 import stt_pb2, stt_pb2_grpc

from services.common.server import (
    ChorusServer,
    ServiceDefinition,
    model_server,
    models_and_workers,
    serve,
)
from services.common.workers import WorkerPool
from services.stt.backends import BACKENDS
from services.stt.backends.ct2_kernels import pin_cpu_kernels
from services.stt.settings import SttSettings

SERVICE_NAME = stt_pb2.DESCRIPTOR.services_by_name["SpeechToText"].full_name


def build_server(settings: SttSettings) -> ChorusServer:
    if settings.backend == "faster-whisper":
        # Before the servicer's import: it imports faster-whisper (for its VAD), so CTranslate2,
        # which reads CT2_USE_MKL as it loads.
        pin_cpu_kernels(BACKENDS.options(settings).cpu_isa, settings.device)
    from services.stt.servicer import SpeechToTextServicer

    models, workers = models_and_workers(
        settings,
        {model: BACKENDS.loader(settings, model) for model in settings.all_models()},
        settings.model,
        "stt",
    )
    decoders = WorkerPool(settings.max_decodes, settings.max_queue, name="decode")
    servicer = SpeechToTextServicer(settings, models, workers, decoders)

    return model_server(
        settings,
        ServiceDefinition(
            SERVICE_NAME, lambda s: stt_pb2_grpc.add_SpeechToTextServicer_to_server(servicer, s)
        ),
        models,
        [workers, decoders],
    )


def main() -> None:
    settings = SttSettings()
    serve("stt", settings, lambda: build_server(settings))


if __name__ == "__main__":
    main()
