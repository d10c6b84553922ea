"""The ImageGeneration contract on both backends (switched only by environment variables):
diffusers with a tiny random-weight Stable Diffusion loaded by ``from_pretrained``, and the
Hugging Face inference API through the real ``InferenceClient`` against a loopback server that
speaks its wire protocol."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from chorus.v1 import common_pb2, image_pb2, image_pb2_grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from PIL import Image

from devtools.processes import ServiceProcess
from services.image.backends.base import Progress
from services.image.models import FALLBACK, ModelDefaults
from services.image.servicer import ImageGenerationServicer, throttle_progress
from services.image.settings import ImageSettings
from tests.conftest import IMAGE_LIMITS
from tests.support.backends import each_backend
from tests.support.hf_fake import VALID_TOKEN, FakeHfInference, fake_hf_inference
from tests.support.llm_servers import IMAGE_SPEC, serving
from tests.support.services import metric_value, scrape

LIMITS = IMAGE_LIMITS


@pytest.fixture(scope="session")
def image_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image-logs")


@pytest.fixture(scope="session")
def hf_api() -> Iterator[FakeHfInference]:
    with fake_hf_inference() as api:
        yield api


def hf_env(api: FakeHfInference, token: str) -> dict[str, str]:
    return {
        **LIMITS,
        "CHORUS_IMAGE_BACKEND": "hf-inference",
        "CHORUS_IMAGE_MODEL": "test-org/tiny-sd",
        "CHORUS_IMAGE_EXTRA_MODELS": json.dumps(["test-org/loading", "test-org/rate-limited"]),
        "CHORUS_IMAGE_HF_INFERENCE__BASE_URL": api.url,
        "CHORUS_IMAGE_HF_INFERENCE__KEY": token,
    }


@pytest.fixture(scope="session")
def image_hf_inference(image_logs: Path, hf_api: FakeHfInference) -> Iterator[ServiceProcess]:
    with serving(IMAGE_SPEC, hf_env(hf_api, VALID_TOKEN), image_logs / "image-hf.log") as proc:
        yield proc


image_server = each_backend("image")
"""Each backend in turn (``image_<backend>``): the contract tests must pass on all of them."""


def stub(proc: ServiceProcess) -> image_pb2_grpc.ImageGenerationStub:
    return image_pb2_grpc.ImageGenerationStub(grpc.insecure_channel(proc.address))


def draw(prompt: str = "a red bicycle by the sea", **fields) -> image_pb2.GenerateImageRequest:
    return image_pb2.GenerateImageRequest(prompt=prompt, **fields)


def collect(responses):
    progress, images, results = [], [], []
    for response in responses:
        kind = response.WhichOneof("event")
        assert not results, "an event arrived after the result"
        if kind == "progress":
            progress.append(response.progress)
        elif kind == "image":
            images.append(response.image)
        else:
            results.append(response.result)
    assert len(results) == 1
    return progress, images, results[0]


def field_violation(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return bad.field_violations[0].field
    raise AssertionError("no BadRequest detail")


def wait_worker_free(proc: ServiceProcess, within: float) -> None:
    started = time.monotonic()
    while metric_value(scrape(proc), "chorus_worker_admitted") > 0:
        assert time.monotonic() - started < within, "the worker was not freed"
        time.sleep(0.02)


def test_generate_streams_progress_then_pngs(image_server):
    progress, images, result = collect(
        stub(image_server).Generate(
            draw(width=96, height=64, steps=5, num_images=2, seed=42, guidance_scale=5.0),
            timeout=60,
        )
    )
    steps = [p.step for p in progress]
    assert steps == sorted(steps) and steps[-1] == 5
    assert all(p.total_steps == 5 for p in progress)
    assert [i.index for i in images] == [0, 1]
    assert [i.seed for i in images] == [42, 43]
    for image in images:
        picture = Image.open(io.BytesIO(image.png))
        assert picture.format == "PNG"
        assert picture.size == (96, 64) == (image.width, image.height)
    assert images[0].png != images[1].png
    assert result.num_images == 2
    assert result.processing_seconds > 0


def test_local_progress_is_throttled(image_diffusers):
    """First and last step always, between them at most one event per progress_interval_ms
    (250 ms by default): 50 small steps take about a second here, far fewer events than steps."""
    progress, _, result = collect(
        stub(image_diffusers).Generate(draw(steps=50, seed=1), timeout=60)
    )
    steps = [p.step for p in progress]
    assert steps[0] == 1 and steps[-1] == 50 and steps == sorted(set(steps))
    assert len(steps) <= 2 + result.processing_seconds / 0.25, (steps, result.processing_seconds)


def test_progress_throttle():
    ticks = iter(t / 10 for t in range(100))  # the clock advances 0.1 s per step
    seen: list[int] = []
    emit = throttle_progress(lambda e: seen.append(e.step), 0.25, clock=lambda: next(ticks))
    for step in range(1, 11):
        emit(Progress(step, 10))
    assert seen == [1, 4, 7, 10]
    every: list[int] = []
    emit = throttle_progress(lambda e: every.append(e.step), 0.0)
    for step in range(1, 6):
        emit(Progress(step, 5))
    assert every == [1, 2, 3, 4, 5]


def test_defaults_and_random_seed(image_server):
    _, (image,), result = collect(stub(image_server).Generate(draw(), timeout=60))
    assert (image.width, image.height) == (64, 64)
    assert result.num_images == 1
    assert Image.open(io.BytesIO(image.png)).size == (64, 64)


def test_same_seed_same_image(image_server):
    request = draw("a lighthouse at dusk", seed=7, steps=3)
    first = collect(stub(image_server).Generate(request, timeout=60))[1][0]
    second = collect(stub(image_server).Generate(request, timeout=60))[1][0]
    other_seed = draw("a lighthouse at dusk", seed=8, steps=3)
    other = collect(stub(image_server).Generate(other_seed, timeout=60))[1][0]
    assert first.png == second.png
    assert first.png != other.png


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (draw(""), "prompt"),
        (draw("   "), "prompt"),
        (draw("x" * 201), "prompt"),
        (draw(negative_prompt="y" * 201), "negative_prompt"),
        (draw(width=100), "width"),
        (draw(height=1024), "height"),
        (draw(width=32), "width"),
        (draw(steps=51), "steps"),
        (draw(num_images=4), "num_images"),
        (draw(guidance_scale=-1.0), "guidance_scale"),
    ],
    ids=[
        "empty-prompt",
        "blank-prompt",
        "long-prompt",
        "long-negative",
        "width-not-8",
        "height-over-max",
        "width-too-small",
        "too-many-steps",
        "too-many-images",
        "guidance",
    ],
)
def test_bad_input_is_invalid_argument(image_server, request_, field):
    with pytest.raises(grpc.RpcError) as error:
        collect(stub(image_server).Generate(request_, timeout=10))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(error.value) == field
    assert image_server.health() == health_pb2.HealthCheckResponse.SERVING


def test_unknown_model_is_not_found(image_server):
    with pytest.raises(grpc.RpcError) as error:
        collect(stub(image_server).Generate(draw(model="nobody/nothing"), timeout=10))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_list_models(image_server):
    models = stub(image_server).ListModels(common_pb2.ListModelsRequest(), timeout=10).models
    (default,) = [m for m in models if m.is_default]
    assert default.loaded and default.backend in ("diffusers", "hf-inference")


# --- a request's zeros get the model's own size and steps; placeholders say so ---------------


@pytest.fixture(scope="module")
def image_native(image_logs: Path, tiny_sd: Path) -> Iterator[ServiceProcess]:
    """The tiny pipeline with no configured defaults (the suite's other image services set
    64x64 and 4 steps), and a hub model that is never loaded."""
    env = {k: v for k, v in LIMITS.items() if not k.startswith("CHORUS_IMAGE_DEFAULT_")}
    env |= {
        "CHORUS_IMAGE_BACKEND": "diffusers",
        "CHORUS_IMAGE_MODEL": str(tiny_sd),
        "CHORUS_IMAGE_EXTRA_MODELS": json.dumps(["stabilityai/sd-turbo"]),
    }
    with serving(IMAGE_SPEC, env, image_logs / "image-native.log") as proc:
        yield proc


def test_zeros_get_the_models_native_size_and_steps(image_native, tiny_sd):
    """The tiny pipeline is 64x64 natively (its UNet's 32-pixel sample through a 2x VAE) and
    its folder asks for 4 steps: a request leaving size and steps at 0 gets those, in well
    under a second. The 512x512, 20-step default it replaced took minutes per picture here."""
    models = {
        m.id: m
        for m in stub(image_native).ListModels(common_pb2.ListModelsRequest(), timeout=10).models
    }
    tiny = models[str(tiny_sd)]
    assert tiny.is_default and tiny.loaded
    assert tiny.image == common_pb2.ImageModelInfo(
        native_width=64, native_height=64, default_width=64, default_height=64, default_steps=4
    )
    assert tiny.placeholder
    assert "noise" in tiny.description and "CHORUS_IMAGE_MODEL" in tiny.description
    turbo = models["stabilityai/sd-turbo"]  # read only when first used: nothing known yet
    assert not turbo.loaded and not turbo.placeholder
    assert turbo.image == common_pb2.ImageModelInfo()

    progress, (image,), result = collect(stub(image_native).Generate(draw(seed=1), timeout=60))
    assert (image.width, image.height) == (64, 64)
    assert Image.open(io.BytesIO(image.png)).size == (64, 64)
    assert {p.total_steps for p in progress} == {4} and progress[-1].step == 4
    # ~0.1 s on an idle 2-core machine; loose for a busy one, far below the old default.
    assert result.processing_seconds < 15, result.processing_seconds
    # What a request names still wins over the model's defaults.
    _, (wide,), _ = collect(
        stub(image_native).Generate(draw(width=96, height=64, steps=2, seed=1), timeout=60)
    )
    assert (wide.width, wide.height) == (96, 64)


def test_hosted_models_are_no_placeholders(image_hf_inference):
    """A hosted model the service does not know has no native size to report; the configured
    defaults are what its zeros get."""
    models = stub(image_hf_inference).ListModels(common_pb2.ListModelsRequest(), timeout=10).models
    (default,) = [m for m in models if m.is_default]
    assert not any(m.placeholder for m in models)
    assert default.image == common_pb2.ImageModelInfo(
        default_width=64, default_height=64, default_steps=4
    )


def servicer_for(**settings: object) -> ImageGenerationServicer:
    return ImageGenerationServicer(ImageSettings(**settings), None, None, {})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("native", "settings", "expected"),
    [
        (ModelDefaults(64, 64, 4), {}, ModelDefaults(64, 64, 4)),
        # SDXL at max_side 512: scaled down whole, aspect kept, multiples of 8.
        (ModelDefaults(1024, 1024, 30), {"max_side": 512}, ModelDefaults(512, 512, 30)),
        (ModelDefaults(1024, 768, 0), {"max_side": 512}, ModelDefaults(512, 384, 20)),
        (ModelDefaults(1000, 1000, 80), {}, ModelDefaults(1000, 1000, 50)),  # max_steps 50
        (ModelDefaults(), {}, FALLBACK),  # a hosted model nobody knows
        (ModelDefaults(), {"max_side": 256}, ModelDefaults(256, 256, 20)),
        (
            ModelDefaults(1024, 1024, 1),
            {"default_width": 128, "default_steps": 8},
            ModelDefaults(128, 1024, 8),
        ),
    ],
    ids=["native", "scaled", "aspect", "steps-capped", "unknown", "unknown-small", "configured"],
)
def test_request_defaults(native, settings, expected):
    assert servicer_for(**settings).defaults(native) == expected


def test_native_size_of_pipelines():
    """As diffusers computes it: ``default_sample_size`` where a pipeline has one (SDXL, SD3,
    Flux), else the UNet's or transformer's ``sample_size``, times the VAE's scale factor."""
    from services.image.backends.diffusers_local import native_size

    def config(sample_size):
        return SimpleNamespace(config=SimpleNamespace(sample_size=sample_size))

    sd15 = SimpleNamespace(vae_scale_factor=8, unet=config(64))
    flux = SimpleNamespace(vae_scale_factor=8, default_sample_size=128, transformer=config(64))
    oblong = SimpleNamespace(vae_scale_factor=8, unet=config([96, 128]))  # (height, width)
    assert native_size(sd15) == (512, 512)
    assert native_size(flux) == (1024, 1024)
    assert native_size(oblong) == (1024, 768)
    assert native_size(SimpleNamespace()) == (0, 0)


# A generation that takes tens of seconds with the tiny model (256x256, 50 steps of ~0.6 s).
LONG = dict(width=256, height=256, steps=50, seed=3)
# Cancelled work stops at the end of the step it is in. Loose, so that a busy machine does
# not fail it, yet far below the time the 50 steps would take if they were not stopped.
STOP_WITHIN_SECONDS = 10.0


def test_deadline_exceeded_frees_worker(image_diffusers):
    wait_worker_free(image_diffusers, within=30)
    with pytest.raises(grpc.RpcError) as error:
        collect(stub(image_diffusers).Generate(draw(**LONG), timeout=0.5))
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_worker_free(image_diffusers, within=STOP_WITHIN_SECONDS)
    assert image_diffusers.health() == health_pb2.HealthCheckResponse.SERVING


def test_cancel_stops_steps_and_full_queue_is_refused(image_diffusers):
    """One worker, one queue slot: a third concurrent call is refused; cancelling frees both."""
    wait_worker_free(image_diffusers, within=30)
    running = stub(image_diffusers).Generate(draw(**LONG), timeout=60)
    assert next(running).WhichOneof("event") == "progress"  # denoising has started
    queued = stub(image_diffusers).Generate(draw(**LONG), timeout=60)
    deadline = time.monotonic() + 30
    while metric_value(scrape(image_diffusers), "chorus_worker_admitted") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with pytest.raises(grpc.RpcError) as error:
        collect(stub(image_diffusers).Generate(draw(), timeout=10))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    queued.cancel()
    running.cancel()
    wait_worker_free(image_diffusers, within=STOP_WITHIN_SECONDS)
    _, images, _ = collect(stub(image_diffusers).Generate(draw(steps=2), timeout=30))
    assert len(images) == 1


def test_hf_request_carries_the_parameters(image_hf_inference, hf_api):
    before = len(hf_api.requests)
    collect(
        stub(image_hf_inference).Generate(
            draw(
                "a cat",
                negative_prompt="dogs",
                width=128,
                height=64,
                steps=9,
                seed=5,
                guidance_scale=3.5,
            ),
            timeout=30,
        )
    )
    (sent,) = hf_api.requests[before:]
    assert sent["path"] == "/models/test-org/tiny-sd"
    assert sent["accept"] == "image/png"
    assert sent["body"]["inputs"] == "a cat"
    assert sent["body"]["parameters"] == {
        "negative_prompt": "dogs",
        "width": 128,
        "height": 64,
        "num_inference_steps": 9,
        "guidance_scale": 3.5,
        "seed": 5,
    }


@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("test-org/loading", grpc.StatusCode.UNAVAILABLE),
        ("test-org/rate-limited", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_hf_errors_map_to_status_codes(image_hf_inference, model, code):
    with pytest.raises(grpc.RpcError) as error:
        collect(stub(image_hf_inference).Generate(draw(model=model), timeout=30))
    assert error.value.code() == code
    assert image_hf_inference.health() == health_pb2.HealthCheckResponse.SERVING


def test_hf_bad_token_is_unauthenticated_and_tokens_never_logged(
    image_hf_inference, hf_api, image_logs
):
    bad = "hf_wrongTokenForTheLoopbackTest987"
    log_path = image_logs / "image-hf-bad-token.log"
    with serving(IMAGE_SPEC, hf_env(hf_api, bad), log_path) as proc:
        with pytest.raises(grpc.RpcError) as error:
            collect(stub(proc).Generate(draw(), timeout=30))
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert bad not in error.value.details()
    assert hf_api.requests[-1]["auth"] == f"Bearer {bad}"  # it was sent, just never logged
    for log in (log_path, image_logs / "image-hf.log"):
        text = log.read_text()
        assert "DEBUG" in text
        assert bad not in text and VALID_TOKEN not in text
