"""``GET /v1/artifacts/{id}`` in-process over a real local artifact store: the media type,
byte ranges, caching by ETag, and a tenant reaching only its own artifacts (any other id, a
malformed one, a path trying to leave the store: the same 404, nothing leaked)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from gateway.app import create_app
from gateway.keys import digest
from gateway.settings import GatewaySettings
from services.common.artifacts import Artifact, ArtifactMeta, ArtifactSettings, open_store
from tests.support.fakes import FakeChannels, fake_stubs

ACME, GLOBEX = "acme-key-0123456789abcdef", "globex-key-0123456789abcdef"
AUDIO = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    monkeypatch.setenv("CHORUS_ARTIFACTS_FOLDER", str(tmp_path / "artifacts"))
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[[keys]]\nname = "a"\ntenant = "acme"\nkey_sha256 = "{digest(ACME)}"\n'
        f'[[keys]]\nname = "g"\ntenant = "globex"\nkey_sha256 = "{digest(GLOBEX)}"\n',
        encoding="utf-8",
    )
    app = create_app(GatewaySettings(api_keys_file=keys), FakeChannels(fake_stubs()))
    yield app.test_client()


def stored(tenant: str, data: bytes = AUDIO, media_type: str = "audio/wav") -> Artifact:
    store = open_store(ArtifactSettings())
    return store.put(data, ArtifactMeta(tenant=tenant, media_type=media_type, model="joe"))


def as_(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def test_the_whole_artifact_with_its_type_and_cache_headers(gateway: FlaskClient) -> None:
    artifact = stored("acme")
    response = gateway.get(f"/v1/artifacts/{artifact.id}", headers=as_(ACME))
    assert response.status_code == 200 and response.data == AUDIO
    assert response.mimetype == "audio/wav"
    assert response.headers["ETag"] == f'"{artifact.id}"'
    assert response.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    assert response.headers["Accept-Ranges"] == "bytes"
    again = gateway.get(
        f"/v1/artifacts/{artifact.id}", headers=as_(ACME, **{"If-None-Match": f'"{artifact.id}"'})
    )
    assert again.status_code == 304 and again.data == b""
    head = gateway.head(f"/v1/artifacts/{artifact.id}", headers=as_(ACME))
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(AUDIO))


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [("bytes=0-99", 0, 100), ("bytes=10000-", 10000, 10240), ("bytes=-40", 10200, 10240)],
    ids=["first", "open", "suffix"],
)
def test_byte_ranges(gateway: FlaskClient, header: str, start: int, stop: int) -> None:
    artifact = stored("acme")
    response = gateway.get(f"/v1/artifacts/{artifact.id}", headers=as_(ACME, Range=header))
    assert response.status_code == 206
    assert response.data == AUDIO[start:stop]
    assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(AUDIO)}"


def test_a_range_outside_is_416_with_the_size(gateway: FlaskClient) -> None:
    artifact = stored("acme")
    response = gateway.get(
        f"/v1/artifacts/{artifact.id}", headers=as_(ACME, Range="bytes=20000-20100")
    )
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(AUDIO)}"
    assert response.get_json()["error"]["code"] == "range_not_satisfiable"


def test_if_range_with_another_etag_gets_the_whole(gateway: FlaskClient) -> None:
    artifact = stored("acme")
    headers = as_(ACME, Range="bytes=0-9", **{"If-Range": '"' + "0" * 64 + '"'})
    response = gateway.get(f"/v1/artifacts/{artifact.id}", headers=headers)
    assert response.status_code == 200 and response.data == AUDIO


def test_another_tenants_unknown_and_malformed_ids_are_the_same_404(
    gateway: FlaskClient, tmp_path: Path
) -> None:
    acme = stored("acme", b"acme's secret picture", "image/png")
    outside = tmp_path / "outside.txt"
    outside.write_text("not an artifact", encoding="utf-8")
    answers = [
        gateway.get(f"/v1/artifacts/{acme.id}", headers=as_(GLOBEX)),  # another tenant's
        gateway.get(f"/v1/artifacts/{'0' * 64}", headers=as_(ACME)),  # unknown
        gateway.get(f"/v1/artifacts/{acme.id.upper()}", headers=as_(ACME)),  # malformed
        gateway.get("/v1/artifacts/..%2F..%2Foutside.txt", headers=as_(ACME)),
        gateway.get("/v1/artifacts/%2e%2e", headers=as_(ACME)),
        gateway.get(f"/v1/artifacts/{acme.id}.json", headers=as_(ACME)),  # its record
    ]
    for response in answers:
        assert response.status_code == 404, response.request.path
        # A path with a slash matches no route (Flask's own 404); the rest are the route's.
        assert response.get_json()["error"]["code"] == "not_found"
        assert b"secret" not in response.data and b"not an artifact" not in response.data
    assert all(r.get_json() == answers[0].get_json() for r in answers[:3] + answers[4:])
    # The same bytes kept for globex are globex's own artifact, with another id.
    theirs = stored("globex", b"acme's secret picture", "image/png")
    assert theirs.id != acme.id
    response = gateway.get(f"/v1/artifacts/{theirs.id}", headers=as_(GLOBEX))
    assert response.status_code == 200
    assert gateway.get(f"/v1/artifacts/{acme.id}").status_code == 401  # no key at all
