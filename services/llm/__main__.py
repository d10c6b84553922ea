"""Run the LLM service: ``python -m services.llm`` (configured by CHORUS_LLM_* variables)."""

from chorus.v1 import llm_pb2, llm_pb2_grpc

from services.common.server import (
    ChorusServer,
    ServiceDefinition,
    model_server,
    models_and_workers,
    serve,
)
from services.llm.backends import BACKENDS, is_placeholder
from services.llm.servicer import TextGenerationServicer
from services.llm.settings import LlmSettings

SERVICE_NAME = llm_pb2.DESCRIPTOR.services_by_name["TextGeneration"].full_name


def build_server(settings: LlmSettings) -> ChorusServer:
    models, workers = models_and_workers(
        settings,
        {model: BACKENDS.loader(settings, model) for model in settings.all_models()},
        settings.model,
        "llm",
    )
    descriptions = {model: BACKENDS.describe(settings, model) for model in settings.all_models()}
    placeholders = frozenset(m for m in settings.all_models() if is_placeholder(settings, m))
    servicer = TextGenerationServicer(settings, models, workers, descriptions, placeholders)

    return model_server(
        settings,
        ServiceDefinition(
            SERVICE_NAME, lambda s: llm_pb2_grpc.add_TextGenerationServicer_to_server(servicer, s)
        ),
        models,
        [workers],
    )


def main() -> None:
    settings = LlmSettings()
    serve("llm", settings, lambda: build_server(settings))


if __name__ == "__main__":
    main()
