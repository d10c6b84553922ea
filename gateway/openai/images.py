"""``/v1/images/generations``: the image service's pictures in OpenAI's shape."""

from __future__ import annotations

import base64
import time

import grpc
from chorus.v1 import image_pb2
from flask import Blueprint, Response, g, jsonify

from gateway.context import call_options, settings_of, stubs_of
from gateway.errors import ApiError, bad_request, from_rpc_error
from gateway.openai.artifacts import save, url_of
from gateway.openai.common import model_id
from gateway.openapi import documented
from gateway.parsing import check_text, json_body, validate
from gateway.responses import Image, ImagesResponse
from gateway.schemas import ImageRequest

__all__ = ["blueprint"]

blueprint = Blueprint("images", __name__, url_prefix="/images")


@blueprint.post("/generations")
@documented("createImage", "images", ImagesResponse, json=ImageRequest)
def generations() -> Response:
    """Generate images

    The PNGs come whole once every image is done: ``b64_json``, or for ``url`` a link to the
    picture kept in the artifact store (``/v1/artifacts/{id}``, the caller's tenant only);
    ``seed`` and ``steps`` are Chorus extensions.
    """
    body = validate(ImageRequest, json_body())
    settings = settings_of()
    check_text(body.prompt, settings.max_text_chars, "prompt")
    if body.n > settings.max_images:
        raise ApiError(400, f"n must be at most {settings.max_images}", "invalid_value", "n")
    width = height = 0
    if body.size != "auto":
        width, height = (int(side) for side in body.size.split("x"))
        if not (0 < width <= 4096 and 0 < height <= 4096):
            raise bad_request(
                "size must be WIDTHxHEIGHT with sides from 1 to 4096", "size", "invalid_value"
            )
    message = image_pb2.GenerateImageRequest(
        prompt=body.prompt,
        width=width,
        height=height,
        steps=body.steps,
        num_images=body.n,
        model=model_id(body.model),
    )
    if body.seed is not None:
        message.seed = body.seed
    pictures: list[image_pb2.GeneratedImage] = []
    try:
        for event in stubs_of().image.Generate(message, **call_options()):
            if event.WhichOneof("event") == "image":
                pictures.append(event.image)
    except grpc.RpcError as error:
        raise from_rpc_error(error, "image generation") from None
    data = []
    for picture in sorted(pictures, key=lambda p: p.index):
        if body.response_format == "url":
            kept = save(
                picture.png,
                "image/png",
                model=message.model or "default",
                backend="image",
                turn_id=g.get("request_id", ""),
                width=picture.width or None,
                height=picture.height or None,
            )
            url = url_of(kept)
            item = Image(revised_prompt=body.prompt, seed=picture.seed, url=url)
        else:
            encoded = base64.b64encode(picture.png).decode()
            item = Image(revised_prompt=body.prompt, seed=picture.seed, b64_json=encoded)
        data.append(item)
    return jsonify(ImagesResponse(created=int(time.time()), data=data).body())
