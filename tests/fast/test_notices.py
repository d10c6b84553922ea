"""/api/config's notices with fake stubs: made of the default model of the image and text
generation services when it is a placeholder, kept a few seconds, and never an error."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from chorus.v1 import common_pb2

from gateway.app import create_app
from gateway.notices import Notices
from gateway.settings import GatewaySettings
from services.common.errors import Unavailable
from tests.support.fakes import FakeChannels, FakeRpcError, Unary, fake_stubs

NOISE = "Pictures are noise: the image model is a tiny random-weight placeholder."


def listing(*models: common_pb2.ModelInfo) -> SimpleNamespace:
    return SimpleNamespace(ListModels=Unary(common_pb2.ListModelsResponse(models=models)))


def model(model_id: str, placeholder: bool, default: bool = True, description: str = ""):
    return common_pb2.ModelInfo(
        id=model_id, is_default=default, placeholder=placeholder, description=description
    )


def test_placeholder_defaults_become_notices_and_the_limits_stay() -> None:
    image = listing(model("tiny", True, description=f"{NOISE}\n  Set it."), model("real", False))
    llm = listing(model("gemma", False), model("other", True, default=False))
    app = create_app(GatewaySettings(), FakeChannels(fake_stubs(image=image, llm=llm)))
    body = app.test_client().get("/api/config").get_json()
    # Only a default model counts (the page uses it); a message is one line.
    assert body["notices"] == [
        {"service": "image", "message": f"{NOISE} Set it.", "setting": "CHORUS_IMAGE_MODEL"}
    ]
    assert body["max_upload_bytes"] == GatewaySettings().max_upload_bytes
    assert 0 < image.ListModels.calls[0].timeout <= GatewaySettings().ready_timeout


def test_a_service_that_does_not_answer_adds_no_notice() -> None:
    image = SimpleNamespace(ListModels=Unary(FakeRpcError(Unavailable("down"))))
    llm = listing(model("gemma", True, description="Replies come from a placeholder."))
    app = create_app(GatewaySettings(), FakeChannels(fake_stubs(image=image, llm=llm)))
    response = app.test_client().get("/api/config")
    assert response.status_code == 200
    assert [n["service"] for n in response.get_json()["notices"]] == ["text-generation"]


def test_notices_are_kept_for_the_ttl() -> None:
    now = [0.0]
    image = listing(model("tiny", True, description=NOISE))
    llm = listing(model("gemma", False))
    stubs = fake_stubs(image=image, llm=llm)
    notices = Notices(ttl=5.0, clock=lambda: now[0])
    first = notices.get(stubs, 1.0)
    now[0] = 4.9
    assert notices.get(stubs, 1.0) == first and len(image.ListModels.calls) == 1
    now[0] = 5.0
    image.ListModels.reply = common_pb2.ListModelsResponse(models=[model("real", False)])
    assert notices.get(stubs, 1.0) == [] and len(image.ListModels.calls) == 2


@pytest.mark.parametrize("placeholder", [False, True])
def test_empty_description_still_says_which_model(placeholder: bool) -> None:
    stubs = fake_stubs(image=listing(model("tiny", placeholder)), llm=listing())
    got = Notices().get(stubs, 1.0)
    assert [n.message for n in got] == (["tiny is a placeholder model."] if placeholder else [])
