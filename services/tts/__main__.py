"""Run the TTS service: ``python -m services.tts`` (configured by CHORUS_TTS_* variables)."""

from chorus.v1 import tts_pb2, tts_pb2_grpc

from services.common.server import (
    ChorusServer,
    ServiceDefinition,
    model_server,
    models_and_workers,
    serve,
)
from services.tts.backends import build_catalog
from services.tts.servicer import TextToSpeechServicer
from services.tts.settings import TtsSettings

SERVICE_NAME = tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name


def build_server(settings: TtsSettings) -> ChorusServer:
    catalog = build_catalog(settings)
    models, workers = models_and_workers(
        settings,
        catalog.loaders,
        catalog.model_of[catalog.default_voice],
        "tts",
    )
    servicer = TextToSpeechServicer(settings, catalog, models, workers)

    return model_server(
        settings,
        ServiceDefinition(
            SERVICE_NAME, lambda s: tts_pb2_grpc.add_TextToSpeechServicer_to_server(servicer, s)
        ),
        models,
        [workers],
    )


def main() -> None:
    settings = TtsSettings()
    serve("tts", settings, lambda: build_server(settings))


if __name__ == "__main__":
    main()
