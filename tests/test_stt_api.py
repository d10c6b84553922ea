"""The openai-api STT backend against a real OpenAI-compatible server on loopback: what the
shared contract (test_stt_contract.py, which also runs on it) does not cover: streaming without
partials, the remote's errors mapped to statuses, retries, and the key kept out of logs."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from chorus.v1 import common_pb2, stt_pb2

from devtools.processes import free_port
from services.common.audio import decode_audio
from services.common.errors import retry_after_of
from services.stt.backends.openai_api import SAMPLE_RATE, UPLOAD_LIMIT_BYTES, _wav
from tests.conftest import OPENAI_API_KEY, stt_openai_api_env, stt_stub
from tests.support.services import running
from tests.support.speech import espeak, word_overlap, words

SENTENCE = "Please send the report to my office before noon tomorrow."
GERMAN = "Wir fahren am Wochenende mit dem Zug nach München und besuchen unsere Freunde."


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return espeak(SENTENCE, "en", tmp_path_factory.mktemp("api") / "speech.wav")


def _request(audio: bytes, **fields) -> stt_pb2.TranscribeRequest:
    return stt_pb2.TranscribeRequest(audio=audio, language="en", **fields)


def _error(stub, request, timeout: float = 60) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        stub.Transcribe(request, timeout=timeout)
    return err.value


def test_transcribes_through_the_api(stt_openai_api, openai_speech_server, speech):
    before = openai_speech_server.hits["/v1/audio/transcriptions"]
    r = stt_stub(stt_openai_api).Transcribe(_request(speech, word_timestamps=True), timeout=120)
    assert openai_speech_server.hits["/v1/audio/transcriptions"] == before + 1
    assert word_overlap(SENTENCE, r.text) >= 0.8, r.text
    assert r.language == "en" and r.model == "whisper-base"
    words = [w.word for s in r.segments for w in s.words]
    assert word_overlap(SENTENCE, " ".join(words)) >= 0.8, words


@pytest.fixture(scope="module")
def german(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """German speech whose language whisper-base (int8) names without doubt on any CPU: p(de)
    0.85 to 0.92, at least 0.79 ahead of the next language, with every CTranslate2 kernel set
    this machine can run (CT2_FORCE_CPU_ISA GENERIC, AVX, AVX2, AVX512 x CT2_USE_MKL 0, 1), on
    the float samples and on 16-bit copies of them. "Guten Morgen, ich möchte heute einen Kaffee
    trinken." sat on the German/English boundary (p(de) minus the runner-up from -0.05 to
    +0.28 over those kernels; English won with MKL at AVX512), so its check measured the CPU."""
    return espeak(GERMAN, "de", tmp_path_factory.mktemp("de") / "de.wav")


def test_detected_language_is_mapped_to_a_code(stt_openai_api, german):
    """OpenAI names the detected language ("german"); Chorus answers with its code."""
    r = stt_stub(stt_openai_api).Transcribe(stt_pb2.TranscribeRequest(audio=german), timeout=120)
    assert r.language == "de"
    assert 0 < r.language_probability <= 1


def test_the_upload_holds_exactly_the_samples_the_local_engine_gets(german):
    """The hop to the remote is lossless: the WAV the backend uploads decodes, as a server
    decodes it, to the very samples the servicer hands a local engine, bit for bit. (A 16-bit
    copy, truncated, moved whisper-base's German detection from p 0.52 to 0.43, next to
    English's 0.41.) Only audio too long for the upload limit as float goes as 16-bit PCM,
    rounded to the nearest step."""
    samples = decode_audio(german, sample_rate=SAMPLE_RATE, max_seconds=60)
    assert np.any((samples != 0) & (np.abs(samples) < 0.5 / 32768))  # lost in 16 bits
    upload = _wav(samples)
    assert len(upload) <= UPLOAD_LIMIT_BYTES
    sent = decode_audio(upload, sample_rate=SAMPLE_RATE, max_seconds=60)
    assert sent.dtype == np.float32 and np.array_equal(sent, samples)

    loud = np.concatenate([samples, np.array([1.5, -1.5, 0.4 / 32768, -0.6 / 32768], np.float32)])
    pcm = _wav(loud, limit=len(upload) // 2 + 1024)
    assert len(pcm) < len(upload) // 2 + 1024
    quantized = decode_audio(pcm, sample_rate=SAMPLE_RATE, max_seconds=60)
    inside = np.abs(loud) < 1
    assert np.abs(quantized - loud)[inside].max() <= 0.5 / 32768
    assert quantized[-4:].tolist() == [32767 / 32768, -1.0, 0.0, -1 / 32768]


def test_remote_and_local_engines_detect_from_the_same_samples(
    stt_openai_api, stt_faster_whisper, openai_speech_server, german
):
    """Through the services: the loopback server (whisper-base, as the local backend runs it)
    decodes the upload to the samples the local service decodes, so both detect the same
    language with the same probability, whatever this CPU's arithmetic makes of the clip."""
    api = stt_stub(stt_openai_api).Transcribe(stt_pb2.TranscribeRequest(audio=german), timeout=120)
    received = openai_speech_server.last_audio
    expected = decode_audio(german, sample_rate=SAMPLE_RATE, max_seconds=60)
    assert received is not None and np.array_equal(received, expected)
    local = stt_stub(stt_faster_whisper).Transcribe(
        stt_pb2.TranscribeRequest(audio=german), timeout=120
    )
    assert api.language == local.language == "de"
    assert api.language_probability == pytest.approx(local.language_probability, abs=1e-4)


def test_streaming_sends_final_segments_only(stt_openai_api, openai_speech_server, speech):
    """Buffered per VAD segment: no partials (each would be one more remote request)."""
    pcm = np.frombuffer(speech[44:], dtype=np.int16)
    audio = np.concatenate([pcm, np.zeros(22050, np.int16), pcm, np.zeros(22050, np.int16)])
    requests = [
        stt_pb2.StreamingTranscribeRequest(
            config=stt_pb2.StreamingTranscribeConfig(
                format=common_pb2.RawAudioFormat(sample_rate_hz=22050),
                language="en",
                partial_interval_ms=200,
            )
        ),
        *(
            stt_pb2.StreamingTranscribeRequest(audio_chunk=audio[i : i + 2205].tobytes())
            for i in range(0, len(audio), 2205)
        ),
    ]
    before = openai_speech_server.hits["/v1/audio/transcriptions"]
    responses = list(stt_stub(stt_openai_api).StreamingTranscribe(iter(requests), timeout=120))
    assert responses and all(r.is_final for r in responses)
    # One remote request per final segment, none for partials. How the two utterances fall
    # into segments depends on how much audio has arrived when the segmenter looks (one
    # segment each, or both in one on a busy machine); the words are there either way.
    assert openai_speech_server.hits["/v1/audio/transcriptions"] - before == len(responses)
    assert len(responses) <= 2
    text = " ".join(r.text for r in responses)
    assert words(text).count("report") == 2, text
    assert word_overlap(SENTENCE, text) >= 0.8, text
    assert [r.segment.start < r.segment.end for r in responses] == [True] * len(responses)


def test_wrong_key_is_unauthenticated_and_not_retried(stt_openai_api, openai_speech_server, speech):
    stub = stt_stub(stt_openai_api)
    before = openai_speech_server.hits["/v1/audio/transcriptions"]
    openai_speech_server.api_key = "sk-the-server-wants-another-key"
    try:
        err = _error(stub, _request(speech))
    finally:
        openai_speech_server.api_key = OPENAI_API_KEY
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "refused the API key" in err.details()
    # The server echoed the key it was given; the service redacted it.
    assert OPENAI_API_KEY not in err.details() and "[redacted]" in err.details()
    assert openai_speech_server.hits["/v1/audio/transcriptions"] == before + 1


@pytest.mark.parametrize(
    ("status", "code"),
    [(429, grpc.StatusCode.RESOURCE_EXHAUSTED), (500, grpc.StatusCode.UNAVAILABLE)],
)
def test_remote_errors_are_retried_then_mapped(
    stt_openai_api, openai_speech_server, speech, status, code
):
    """429 and 5xx are safe to retry (transcription has no side effects): one retry is
    configured, so the remote sees two requests before the call fails."""
    stub = stt_stub(stt_openai_api)
    before = openai_speech_server.hits["/v1/audio/transcriptions"]
    with openai_speech_server.fail(status):
        err = _error(stub, _request(speech))
    assert err.code() == code
    assert f"({status})" in err.details()
    assert openai_speech_server.hits["/v1/audio/transcriptions"] == before + 2
    # The remote's Retry-After-Ms (50) is passed on as RetryInfo: 429 with Retry-After upstream.
    assert retry_after_of(err) == (pytest.approx(0.05) if status == 429 else None)


def test_one_failure_is_absorbed_by_the_retry(stt_openai_api, openai_speech_server, speech):
    with openai_speech_server.fail(500, times=1):
        r = stt_stub(stt_openai_api).Transcribe(_request(speech), timeout=120)
    assert word_overlap(SENTENCE, r.text) >= 0.8


def test_unknown_remote_model_is_not_found(
    logs, openai_speech_server, speech, tmp_path_factory: pytest.TempPathFactory
):
    key_file = tmp_path_factory.mktemp("secrets") / "key"
    key_file.write_text(OPENAI_API_KEY)
    env = {
        **stt_openai_api_env(openai_speech_server, key_file),
        "CHORUS_STT_MODEL": "whisper-huge-v9",
    }
    with running("stt", env, logs, "api-404") as proc:
        err = _error(stt_stub(proc), _request(speech))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "whisper-huge-v9" in err.details()


def test_connection_refused_is_unavailable(logs, openai_speech_server, speech, tmp_path_factory):
    """A closed port: the service still starts (no request at start) and answers UNAVAILABLE."""
    key_file = tmp_path_factory.mktemp("secrets") / "key"
    key_file.write_text(OPENAI_API_KEY)
    env = {
        **stt_openai_api_env(openai_speech_server, key_file),
        "CHORUS_STT_OPENAI_API__BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
    }
    with running("stt", env, logs, "api-refused") as proc:
        err = _error(stt_stub(proc), _request(speech))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot be reached" in err.details()


def test_key_never_in_logs(logs, stt_openai_api, speech):
    """Every STT service this session ran on the API backend logged at DEBUG, through
    successes, 401, 429, 500, 404 and refused connections: the key appears in none of them."""
    stt_stub(stt_openai_api).Transcribe(_request(speech), timeout=120)
    files = sorted(logs.glob("stt-api*.log"))
    others = sorted(set(logs.glob("stt-api*")) - set(files))  # span files and the like
    assert files
    for path in files:
        text = path.read_text(errors="replace")
        assert text and " DEBUG " in text, path
        assert OPENAI_API_KEY not in text, path
        assert OPENAI_API_KEY[-12:] not in text, path
    for path in others:
        assert OPENAI_API_KEY[-12:] not in path.read_text(errors="replace"), path
