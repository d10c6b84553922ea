"""Run the image service: ``python -m services.image`` (configured by CHORUS_IMAGE_* variables)."""

from chorus.v1 import image_pb2, image_pb2_grpc

from services.common.server import (
    ChorusServer,
    ServiceDefinition,
    model_server,
    models_and_workers,
    serve,
)
from services.image.backends import BACKENDS, is_placeholder
from services.image.servicer import ImageGenerationServicer
from services.image.settings import ImageSettings

SERVICE_NAME = image_pb2.DESCRIPTOR.services_by_name["ImageGeneration"].full_name


def build_server(settings: ImageSettings) -> ChorusServer:
    models, workers = models_and_workers(
        settings,
        {model: BACKENDS.loader(settings, model) for model in settings.all_models()},
        settings.model,
        "image",
    )
    descriptions = {model: BACKENDS.describe(settings, model) for model in settings.all_models()}
    placeholders = frozenset(m for m in settings.all_models() if is_placeholder(settings, m))
    servicer = ImageGenerationServicer(settings, models, workers, descriptions, placeholders)

    return model_server(
        settings,
        ServiceDefinition(
            SERVICE_NAME,
            lambda s: image_pb2_grpc.add_ImageGenerationServicer_to_server(servicer, s),
        ),
        models,
        [workers],
    )


def main() -> None:
    settings = ImageSettings()
    serve("image", settings, lambda: build_server(settings))


if __name__ == "__main__":
    main()
