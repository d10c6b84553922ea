"""Piper's ONNX Runtime session follows the service's thread settings (in-process: the session
options are not visible over gRPC)."""

from __future__ import annotations

from services.tts.backends import build_catalog
from services.tts.settings import TtsSettings


def session_options(settings: TtsSettings):
    catalog = build_catalog(settings)
    backend = catalog.loaders[catalog.model_of[catalog.default_voice]]()
    return backend._voice.session.get_session_options()


def test_defaults_one_thread_per_core_and_no_spinning():
    options = session_options(TtsSettings())
    assert options.intra_op_num_threads == 0  # ONNX Runtime's own: one per core
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_settings_reach_the_session(monkeypatch):
    monkeypatch.setenv("CHORUS_TTS_CPU_THREADS", "1")
    monkeypatch.setenv("CHORUS_TTS_PIPER__SPIN_WAIT", "true")
    options = session_options(TtsSettings())
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
