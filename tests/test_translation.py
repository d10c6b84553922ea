"""Speech translation (TASK_TRANSLATE): German and Spanish speech (espeak-ng) to English text
with the multilingual Whisper base weights; English-only models refuse with
FAILED_PRECONDITION. Whisper base is small: the English it writes is rough, so the check is
on the key words of the reference translation, not on the whole sentence."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from chorus.v1 import common_pb2, stt_pb2

from tests.conftest import stt_stub
from tests.support.speech import espeak, read_wav, words

TRANSLATE = stt_pb2.TASK_TRANSLATE
# (language, sentence spoken, reference translation, key words the English must contain,
#  words of the spoken language it must not)
# Each sentence's key words came out under every CTranslate2 kernel set tried (10 on an AMD
# EPYC: CT2_FORCE_CPU_ISA x ONEDNN_MAX_CPU_ISA, the service's pinned set among them; the Spanish
# also under an Intel Xeon's defaults), with p(language) 0.83-0.90 (de) and 0.80-0.87 (es).
# The sentences used before sat on boundaries: "... un café y leer un libro en el parque" lost
# "today" or "book" ("a lemon") under 2 of those sets, and "book" under this machine's own
# defaults, where this test failed; "Guten Morgen, ich möchte heute einen Kaffee trinken ..."
# lost "good morning" under one.
CASES = [
    (
        "de",
        "Guten Morgen, heute möchte ich meine Freunde im Park sehen.",
        "Good morning, today I would like to see my friends in the park.",
        {"morning", "today", "park"},
        {"guten", "morgen", "heute"},
    ),
    (
        "es",
        "Buenos días, hoy quiero caminar por el parque con mi familia.",
        "Good morning, today I want to walk in the park with my family.",
        {"today", "walk", "family"},
        {"hoy", "caminar", "familia"},
    ),
]
IDS = [c[0] for c in CASES]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("translate")
    return {lang: espeak(sentence, lang, folder / f"{lang}.wav") for lang, sentence, *_ in CASES}


@pytest.mark.parametrize(("language", "sentence", "reference", "keys", "foreign"), CASES, ids=IDS)
def test_translates_to_english(
    stt_faster_whisper, clips, language, sentence, reference, keys, foreign
):
    r = stt_stub(stt_faster_whisper).Transcribe(
        stt_pb2.TranscribeRequest(audio=clips[language], task=TRANSLATE), timeout=120
    )
    found = set(words(r.text))
    assert keys <= found, (reference, r.text)
    assert not foreign & found, r.text
    assert r.language == language  # the spoken language, detected
    assert r.segments and r.segments[0].text


def test_transcribe_is_still_the_default(stt_faster_whisper, clips):
    stub = stt_stub(stt_faster_whisper)
    for task in (stt_pb2.TASK_UNSPECIFIED, stt_pb2.TASK_TRANSCRIBE):
        r = stub.Transcribe(stt_pb2.TranscribeRequest(audio=clips["de"], task=task), timeout=120)
        assert {"guten", "freunde"} <= set(words(r.text)), r.text


def test_streaming_translates(stt_faster_whisper, clips):
    samples, rate = read_wav(clips["es"])
    audio = np.concatenate([samples, np.zeros(rate, np.int16)])
    config = stt_pb2.StreamingTranscribeConfig(
        format=common_pb2.RawAudioFormat(sample_rate_hz=rate), task=TRANSLATE
    )
    requests = [
        stt_pb2.StreamingTranscribeRequest(config=config),
        *(
            stt_pb2.StreamingTranscribeRequest(audio_chunk=audio[i : i + rate // 10].tobytes())
            for i in range(0, len(audio), rate // 10)
        ),
    ]
    responses = list(stt_stub(stt_faster_whisper).StreamingTranscribe(iter(requests), timeout=120))
    final = " ".join(r.text for r in responses if r.is_final)
    assert {"walk", "family"} <= set(words(final)), final


def test_english_only_model_is_failed_precondition(stt_faster_whisper, clips):
    stub = stt_stub(stt_faster_whisper)
    request = stt_pb2.TranscribeRequest(audio=clips["de"], task=TRANSLATE, model="whisper-tiny.en")
    with pytest.raises(grpc.RpcError) as err:
        stub.Transcribe(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "whisper-tiny.en is English-only and cannot translate" in err.value.details()

    config = stt_pb2.StreamingTranscribeConfig(model="whisper-tiny.en", task=TRANSLATE)
    with pytest.raises(grpc.RpcError) as err:
        list(
            stub.StreamingTranscribe(
                iter([stt_pb2.StreamingTranscribeRequest(config=config)]), timeout=60
            )
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The same model still transcribes.
    r = stub.Transcribe(
        stt_pb2.TranscribeRequest(audio=clips["de"], model="whisper-tiny.en"), timeout=60
    )
    assert r.text


def test_unknown_task_is_invalid_argument(stt_faster_whisper, clips):
    with pytest.raises(grpc.RpcError) as err:
        stt_stub(stt_faster_whisper).Transcribe(
            stt_pb2.TranscribeRequest(audio=clips["de"], task=7), timeout=60
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "task" in err.value.details()


def test_openai_whisper_backend_translates(stt_openai_whisper, clips):
    """The random-weight checkpoint writes no real English; this shows the task reaches
    openai-whisper's decoder and the multilingual model accepts it."""
    r = stt_stub(stt_openai_whisper).Transcribe(
        stt_pb2.TranscribeRequest(audio=clips["de"], task=TRANSLATE, language="de"), timeout=120
    )
    assert r.language == "de"
    assert r.duration_seconds > 1


def test_api_backend_translates(stt_openai_api, openai_speech_server, clips, tmp_path: Path):
    """Through /v1/audio/translations of the loopback server (same whisper-base weights)."""
    before = openai_speech_server.hits["/v1/audio/translations"]
    r = stt_stub(stt_openai_api).Transcribe(
        stt_pb2.TranscribeRequest(audio=clips["de"], task=TRANSLATE), timeout=120
    )
    assert openai_speech_server.hits["/v1/audio/translations"] == before + 1
    assert {"morning", "today"} <= set(words(r.text)), r.text
    assert r.language == "de"
