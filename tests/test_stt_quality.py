"""What the real multilingual Whisper base weights must do through the STT gRPC service."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import jiwer
import numpy as np
import pytest
from chorus.v1 import common_pb2, stt_pb2

from tests.conftest import ROUND_TRIP_SENTENCES, stt_stub
from tests.support.services import metric_value, scrape
from tests.support.speech import (
    espeak,
    read_wav,
    reencode,
    speech_bounds,
    wav_bytes,
    word_overlap,
)

# Transcribed with at least 0.8 of their words under each of 10 CTranslate2 kernel sets (see
# test_translation.py). "Buenos días, hoy quiero beber un café y leer un libro en el parque."
# collapsed into a repeated question ("¿Qué no me ve nunca fele?") under 4 of them.
MULTILINGUAL = [
    ("de", "Guten Morgen, ich möchte heute einen Kaffee trinken und ein Buch lesen."),
    ("es", "Buenos días, hoy quiero caminar por el parque con mi familia."),
    ("fr", "Je suis très content de vous voir ici ce soir, mes amis."),
]


@pytest.mark.parametrize(("language", "sentence"), MULTILINGUAL, ids=[m[0] for m in MULTILINGUAL])
def test_detects_language_and_transcribes(stt_faster_whisper, tmp_path: Path, language, sentence):
    audio = espeak(sentence, language, tmp_path / "speech.wav")
    response = stt_stub(stt_faster_whisper).Transcribe(
        stt_pb2.TranscribeRequest(audio=audio), timeout=120
    )
    assert response.language == language
    # espeak's robotic voice leaves whisper-base unsure (0.58 to 0.86 with the service's pinned
    # kernels, 0.50 to 0.87 across 10 kernel sets); the language detected is the check, the
    # probability only has to rank it first.
    assert response.language_probability > 0.3
    assert word_overlap(sentence, response.text) >= 0.5, response.text


def _round_trip_wer(stt, clips: dict[str, bytes]) -> float:
    stub = stt_stub(stt)
    hypotheses = [
        stub.Transcribe(stt_pb2.TranscribeRequest(audio=clip, language="en"), timeout=120).text
        for clip in clips.values()
    ]
    transform = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
            jiwer.ReduceToListOfListOfWords(),
        ]
    )
    return jiwer.wer(
        list(clips), hypotheses, reference_transform=transform, hypothesis_transform=transform
    )


def test_piper_round_trip_wav(stt_faster_whisper, piper_speech):
    assert _round_trip_wer(stt_faster_whisper, piper_speech) <= 0.15


@pytest.mark.parametrize(
    ("fmt", "codec", "rate"), [("webm", "libopus", 48000), ("mp3", "libmp3lame", 22050)]
)
def test_piper_round_trip_reencoded(stt_faster_whisper, piper_speech, fmt, codec, rate):
    clips = {text: reencode(wav, fmt, codec, rate) for text, wav in piper_speech.items()}
    assert all(not clip.startswith(b"RIFF") for clip in clips.values())
    assert _round_trip_wer(stt_faster_whisper, clips) <= 0.15


def test_streaming_partials_arrive_before_the_end(stt_faster_whisper, piper_speech):
    """100 ms chunks paced at twice real time: a partial comes back before the last chunk is
    sent, and the finals together match the unary transcript."""
    silence = np.zeros(22050, np.int16)  # a one-second pause
    parts = []
    for wav in piper_speech.values():
        samples, rate = read_wav(wav)
        parts += [samples, silence]
    audio = np.concatenate(parts)
    chunk = rate // 10
    sent_last_at: list[float] = []

    def requests():
        yield stt_pb2.StreamingTranscribeRequest(
            config=stt_pb2.StreamingTranscribeConfig(
                format=common_pb2.RawAudioFormat(
                    encoding=common_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate
                ),
                language="en",
                partial_interval_ms=500,
            )
        )
        for start in range(0, len(audio), chunk):
            time.sleep(0.05)
            yield stt_pb2.StreamingTranscribeRequest(
                audio_chunk=audio[start : start + chunk].tobytes()
            )
        sent_last_at.append(time.monotonic())

    stub = stt_stub(stt_faster_whisper)
    events = [(time.monotonic(), r) for r in stub.StreamingTranscribe(requests(), timeout=300)]
    partials = [t for t, r in events if not r.is_final]
    finals = [r for _, r in events if r.is_final]
    assert partials and partials[0] < sent_last_at[0]
    assert len(finals) >= 2, "the pauses between sentences should close segments"
    assert all(r.segment.end > r.segment.start for r in finals)
    streamed = " ".join(r.text for r in finals)
    unary = stub.Transcribe(
        stt_pb2.TranscribeRequest(audio=wav_bytes(audio, rate), language="en"), timeout=120
    ).text
    assert jiwer.wer(_norm(unary), _norm(streamed)) <= 0.1, (unary, streamed)
    assert jiwer.wer(_norm(" ".join(ROUND_TRIP_SENTENCES)), _norm(streamed)) <= 0.15


def test_streaming_final_is_decoded_during_the_pause(stt_faster_whisper, piper_speech):
    """Speech, then 0.5 s of silence (a candidate: the pause may end the segment), a wait, then
    the silence that confirms the pause: the final is the candidate decoded during the wait,
    and matches what the unary call answers for the same audio."""
    samples, rate = read_wav(next(iter(piper_speech.values())))
    # Cut the clip where its speech ends, so the silence sent is the pause: 0.5 s lies between
    # vad_speculate_ms (0.4) and vad_silence_ms (0.6), which closes the segment.
    speech = samples[: speech_bounds(samples, rate)[1]]
    silence = np.zeros(int(0.5 * rate), np.int16)
    waited = threading.Event()

    def requests():
        yield stt_pb2.StreamingTranscribeRequest(
            config=stt_pb2.StreamingTranscribeConfig(
                format=common_pb2.RawAudioFormat(sample_rate_hz=rate),
                language="en",
                partial_interval_ms=60_000,
            )
        )
        yield stt_pb2.StreamingTranscribeRequest(audio_chunk=speech.tobytes())
        yield stt_pb2.StreamingTranscribeRequest(audio_chunk=silence.tobytes())
        waited.wait(timeout=30)
        yield stt_pb2.StreamingTranscribeRequest(audio_chunk=silence.tobytes())

    def used() -> float:
        text = scrape(stt_faster_whisper)
        return metric_value(text, "chorus_stt_speculative_finals_total", outcome="used")

    before = used()
    stub = stt_stub(stt_faster_whisper)
    responses = stub.StreamingTranscribe(requests(), timeout=120)
    threading.Timer(3.0, waited.set).start()  # the candidate's decode ends meanwhile
    finals = [r for r in responses if r.is_final]
    assert len(finals) == 1
    assert used() == before + 1
    unary = stub.Transcribe(
        stt_pb2.TranscribeRequest(audio=wav_bytes(speech, rate), language="en"), timeout=120
    )
    assert jiwer.wer(_norm(unary.text), _norm(finals[0].text)) <= 0.1, (unary.text, finals[0].text)


def _norm(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def test_streaming_rejects_chunks_without_config(stt_faster_whisper):
    stub = stt_stub(stt_faster_whisper)
    with pytest.raises(grpc.RpcError) as err:
        list(
            stub.StreamingTranscribe(
                iter([stt_pb2.StreamingTranscribeRequest(audio_chunk=b"\0\0")]), timeout=30
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config" in err.value.details()


def test_tiny_en_is_selectable(stt_faster_whisper, piper_speech):
    stub = stt_stub(stt_faster_whisper)
    text, wav = next(iter(piper_speech.items()))
    response = stub.Transcribe(
        stt_pb2.TranscribeRequest(audio=wav, model="whisper-tiny.en"), timeout=120
    )
    assert response.model == "whisper-tiny.en"
    assert word_overlap(text, response.text) >= 0.8
    with pytest.raises(grpc.RpcError) as err:
        stub.Transcribe(
            stt_pb2.TranscribeRequest(audio=wav, model="whisper-tiny.en", language="de")
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
