"""API keys with names and tenants (gateway/keys.py): the keys file, its reload without a
restart, the static key beside it, and no key ever in a message or a log line."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from chorus.v1 import tts_pb2
from pydantic import SecretStr

from gateway.app import create_app
from gateway.keys import ANONYMOUS, KeyRing, Principal, digest, read_keys
from gateway.settings import GatewaySettings
from tests.support.fakes import FakeChannels, Unary, fake_stubs

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-fedcba9876543210"
CAROL = "carol-key-00112233445566778899"
STATIC = "static-key-aaaabbbbccccdddd"


def keys_file(path: Path, *entries: str) -> Path:
    """Write ``entries`` (TOML tables) atomically, as an operator's tool would."""
    staging = path.with_suffix(".new")
    staging.write_text("".join(f"[[keys]]\n{e}\n" for e in entries), encoding="utf-8")
    os.replace(staging, path)
    return path


def alice() -> str:
    return f'name = "alice"\ntenant = "acme"\nkey = "{ALICE}"'


def bob() -> str:  # given by its hash: the file need not hold the key itself
    return f'name = "bob"\ntenant = "globex"\nkey_sha256 = "{digest(BOB)}"'


def carol() -> str:
    return f'name = "carol"\ntenant = "acme"\nkey = "{CAROL}"'


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_key_is_its_name_and_tenant(tmp_path: Path) -> None:
    path = keys_file(tmp_path / "keys.toml", alice(), bob())
    ring = KeyRing(GatewaySettings(api_keys_file=path))
    assert not ring.open
    assert ring.authenticate(ALICE) == Principal("alice", "acme")
    assert ring.authenticate(BOB) == Principal("bob", "globex")
    for wrong in (None, "", ALICE + "x", ALICE[:-1], digest(BOB)):
        assert ring.authenticate(wrong) is None


def test_the_static_key_still_works_beside_a_file(tmp_path: Path) -> None:
    path = keys_file(tmp_path / "keys.toml", alice())
    settings = GatewaySettings(api_key=SecretStr(STATIC), api_key_tenant="ops", api_keys_file=path)
    ring = KeyRing(settings)
    assert ring.authenticate(STATIC) == Principal("static-key", "ops")
    assert ring.authenticate(ALICE) == Principal("alice", "acme")
    alone = KeyRing(GatewaySettings(api_key=SecretStr(STATIC)))
    assert alone.authenticate(STATIC) == Principal("static-key", "default")
    assert alone.authenticate(ALICE) is None


def test_a_gateway_without_keys_serves_everyone_as_the_default_tenant() -> None:
    ring = KeyRing(GatewaySettings())
    assert ring.open and ring.authenticate(None) is ANONYMOUS


def test_keys_come_and_go_without_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    path = keys_file(tmp_path / "keys.toml", alice(), bob())
    ring = KeyRing(GatewaySettings(api_keys_file=path, api_keys_reload_seconds=1.0), clock)
    keys_file(path, alice(), carol())  # bob revoked, carol added
    clock.now = 0.5  # not yet looked at again
    assert ring.authenticate(BOB) == Principal("bob", "globex")
    assert ring.authenticate(CAROL) is None
    clock.now = 1.0
    assert ring.authenticate(BOB) is None
    assert ring.authenticate(CAROL) == Principal("carol", "acme")
    # Edited in place (same inode, another size) counts as a change too.
    path.write_text(f"[[keys]]\n{bob()}\n", encoding="utf-8")
    clock.now = 2.0
    assert ring.authenticate(BOB) == Principal("bob", "globex")
    assert ring.authenticate(ALICE) is None


@pytest.mark.parametrize(
    "broken",
    [
        f'[[keys]]\nname = "alice"\ntenant = "acme"\nkey = "{ALICE}"\nrole = "admin"\n',
        f'[[keys]]\nname = "alice"\ntenant = "acme"\nkey = "{ALICE}"\nkey_sha256 = "{"0" * 64}"\n',
        f'[[keys]]\nname = "alice"\ntenant = "a/../b"\nkey = "{ALICE}"\n',
        f'[[keys]]\nname = "alice"\ntenant = "acme"\nkey = "{ALICE}"\n' * 2,
        f'[[keys]]\nname = "alice"\ntenant = "acme"\nkey = "{ALICE[:8]}"\n',  # too short
        f'[[keys]\nkey = "{ALICE}"\n',  # not TOML
    ],
    ids=["unknown-field", "two-keys", "bad-tenant", "duplicate", "short-key", "not-toml"],
)
def test_a_broken_file_keeps_the_keys_in_force_and_names_no_key(
    tmp_path: Path, broken: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    path = keys_file(tmp_path / "keys.toml", bob())
    ring = KeyRing(GatewaySettings(api_keys_file=path), clock)
    path.write_text(broken, encoding="utf-8")
    clock.now = 5.0
    with caplog.at_level(logging.INFO, logger="gateway.keys"):
        assert ring.authenticate(BOB) == Principal("bob", "globex")
        assert ring.authenticate(ALICE) is None
    assert "keeping the 1 keys in force" in caplog.text
    assert ALICE not in caplog.text and ALICE[:8] not in caplog.text
    # And at start, the same file stops the gateway with a message that holds no key.
    with pytest.raises(ValueError) as refused:
        read_keys(path)
    assert ALICE[:8] not in str(refused.value)


def test_a_missing_file_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        KeyRing(GatewaySettings(api_keys_file=tmp_path / "absent.toml"))


def test_requests_carry_their_key_name_into_the_log_and_never_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = keys_file(tmp_path / "keys.toml", alice(), bob())
    voices = tts_pb2.ListVoicesResponse(voices=[tts_pb2.Voice(id="joe", language="en")])
    stubs = fake_stubs(tts=SimpleNamespace(ListVoices=Unary(voices)))
    client = create_app(GatewaySettings(api_keys_file=path), FakeChannels(stubs)).test_client()
    with caplog.at_level(logging.INFO, logger="gateway.app"):
        ok = client.get("/api/voices", headers={"Authorization": f"Bearer {BOB}"})
        refused = client.get("/api/voices", headers={"Authorization": "Bearer nobody"})
    assert ok.status_code == 200 and refused.status_code == 401
    assert "key bob of globex" in caplog.text
    assert BOB not in caplog.text and ALICE not in caplog.text
    assert len(stubs.tts.ListVoices.calls) == 1
