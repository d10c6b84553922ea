"""StreamingTranscribe's voice-activity events and speculative finals, through the real service
(faster-whisper, whisper-base): what a caller that takes turns with the speaker relies on."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from chorus.v1 import common_pb2, stt_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.conftest import ROUND_TRIP_SENTENCES, stt_stub
from tests.support.services import metric_value, scrape
from tests.support.speech import espeak, read_wav, speech_bounds, word_overlap

RATE = 22_050  # espeak-ng's
CHUNK = RATE // 10
TOLERANCE_MS = 100  # the VAD's 32 ms windows fall differently on the clip and on the stream


@pytest.fixture(scope="module")
def sentences(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """The first two round-trip sentences, cut to their speech (so the pauses sent are exact).

    Spoken by espeak-ng, which says a sentence the same way every time: Piper's VITS samples
    noise, so its clips (and where the VAD hears their first phoneme) differ from run to run."""
    out = []
    folder = tmp_path_factory.mktemp("streaming")
    for i, text in enumerate(ROUND_TRIP_SENTENCES[:2]):
        samples, rate = read_wav(espeak(text, "en", folder / f"{i}.wav"))
        assert rate == RATE
        start, end = speech_bounds(samples, rate)
        out.append(samples[start:end])
    return out


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


def config(language: str = "en", **fields) -> stt_pb2.StreamingTranscribeRequest:
    return stt_pb2.StreamingTranscribeRequest(
        config=stt_pb2.StreamingTranscribeConfig(
            format=common_pb2.RawAudioFormat(sample_rate_hz=RATE), language=language, **fields
        )
    )


def chunks(audio: np.ndarray) -> Iterator[stt_pb2.StreamingTranscribeRequest]:
    for start in range(0, len(audio), CHUNK):
        yield stt_pb2.StreamingTranscribeRequest(audio_chunk=audio[start : start + CHUNK].tobytes())


def kind(response: stt_pb2.StreamingTranscribeResponse) -> str:
    event = response.WhichOneof("event")
    if event:
        return event
    return "final" if response.is_final else "candidate" if response.candidate else "partial"


def ms(samples: int) -> int:
    return samples * 1000 // RATE


def test_speech_started_and_stopped_at_the_speech_bounds(stt_faster_whisper, sentences):
    first, second = sentences
    parts = [silence(0.5), first, silence(1.5), second, silence(1.5)]
    audio = np.concatenate(parts)
    bounds = []  # (start, end) of each sentence in the stream, in ms
    at = len(parts[0])
    for speech, pause in ((first, parts[2]), (second, parts[4])):
        bounds.append((ms(at), ms(at + len(speech))))
        at += len(speech) + len(pause)

    requests = [config(speech_events=True, partial_interval_ms=60_000), *chunks(audio)]
    responses = list(stt_stub(stt_faster_whisper).StreamingTranscribe(iter(requests), timeout=300))

    events = [r for r in responses if r.WhichOneof("event")]
    assert [kind(r) for r in events] == ["speech_started", "speech_stopped"] * 2
    pairs = zip(events[::2], events[1::2], strict=True)
    for (start, end), (started, stopped) in zip(bounds, pairs, strict=True):
        assert abs(started.speech_started.audio_start_ms - start) <= TOLERANCE_MS, (start, started)
        assert abs(stopped.speech_stopped.audio_end_ms - end) <= TOLERANCE_MS, (end, stopped)
        assert not started.speech_started.resumed and not started.text
    finals = [r for r in responses if r.is_final]
    assert [f.segment.id for f in finals] == [0, 1]
    for final, text, (start, end) in zip(finals, ROUND_TRIP_SENTENCES[:2], bounds, strict=True):
        assert word_overlap(text, final.text) >= 0.8, final.text
        assert final.segment.start * 1000 <= start and final.segment.end * 1000 >= end
    # Each stop is sent when it is heard, before the text of its segment.
    order = [kind(r) for r in responses if kind(r) != "candidate"]
    assert order.index("speech_stopped") < order.index("final")


def test_no_events_unless_asked(stt_faster_whisper, sentences):
    audio = np.concatenate([sentences[0], silence(1.0)])
    requests = [config(), *chunks(audio)]
    responses = list(stt_stub(stt_faster_whisper).StreamingTranscribe(iter(requests), timeout=300))
    assert responses and {kind(r) for r in responses} <= {"partial", "final"}


class Conversation:
    """A stream whose requests wait for what the test has seen of the responses."""

    def __init__(self, stub, first: stt_pb2.StreamingTranscribeRequest) -> None:
        self._requests: queue.Queue[stt_pb2.StreamingTranscribeRequest | None] = queue.Queue()
        self._requests.put(first)
        self.responses: queue.Queue[stt_pb2.StreamingTranscribeResponse | None] = queue.Queue()
        self.seen: list[stt_pb2.StreamingTranscribeResponse] = []
        call = stub.StreamingTranscribe(iter(self._requests.get, None), timeout=300)
        self._reader = threading.Thread(target=self._read, args=(call,), daemon=True)
        self._reader.start()

    def _read(self, call) -> None:
        for response in call:
            self.responses.put(response)
        self.responses.put(None)

    def send(self, audio: np.ndarray) -> None:
        for request in chunks(audio):
            self._requests.put(request)

    def wait_for(self, wanted: str) -> stt_pb2.StreamingTranscribeResponse:
        while (response := self.responses.get(timeout=120)) is not None:
            self.seen.append(response)
            if kind(response) == wanted:
                return response
        raise AssertionError(f"the stream ended without {wanted}: {[kind(r) for r in self.seen]}")

    def finish(self) -> list[stt_pb2.StreamingTranscribeResponse]:
        self._requests.put(None)
        while (response := self.responses.get(timeout=120)) is not None:
            self.seen.append(response)
        return self.seen


def _used(stt) -> float:
    return metric_value(scrape(stt), "chorus_stt_speculative_finals_total", outcome="used")


@pytest.mark.parametrize("language", ["en", ""], ids=["given", "detected"])
def test_candidate_comes_during_the_pause_and_becomes_the_final(
    stt_faster_whisper, sentences, language
):
    """0.5 s of pause is past vad_speculate_ms (400) but short of vad_silence_ms (600): the
    candidate is decoded and sent while the pause is not yet confirmed. (A language detected
    on the candidate does not make its final decode again.)"""
    used = _used(stt_faster_whisper)
    talk = Conversation(stt_stub(stt_faster_whisper), config(language, speech_events=True))
    talk.send(np.concatenate([sentences[0], silence(0.5)]))
    candidate = talk.wait_for("candidate")
    assert not any(kind(r) in ("speech_stopped", "final") for r in talk.seen)
    talk.send(silence(1.0))
    responses = talk.finish()
    assert [kind(r) for r in responses if kind(r) != "partial"] == [
        "speech_started",
        "candidate",
        "speech_stopped",
        "final",
    ]
    final = responses[-1]
    assert final.text == candidate.text and word_overlap(ROUND_TRIP_SENTENCES[0], final.text) >= 0.8
    assert final.segment.end == pytest.approx(candidate.segment.end)
    assert _used(stt_faster_whisper) == used + 1


def test_speech_that_resumes_voids_the_candidate(stt_faster_whisper, sentences):
    first, second = sentences
    talk = Conversation(stt_stub(stt_faster_whisper), config(speech_events=True))
    talk.send(np.concatenate([first, silence(0.5)]))
    candidate = talk.wait_for("candidate")
    talk.send(np.concatenate([second, silence(1.0)]))
    responses = talk.finish()
    assert [kind(r) for r in responses if kind(r) not in ("partial", "candidate")] == [
        "speech_started",
        "speech_started",
        "speech_stopped",
        "final",
    ]
    resumed = [r.speech_started for r in responses if kind(r) == "speech_started"][1]
    assert resumed.resumed
    assert resumed.audio_start_ms == pytest.approx(ms(len(first) + int(0.5 * RATE)), abs=100)
    final = responses[-1]
    assert final.segment.end > candidate.segment.end
    assert word_overlap(ROUND_TRIP_SENTENCES[0] + " " + ROUND_TRIP_SENTENCES[1], final.text) >= 0.8


@pytest.mark.parametrize(
    ("field", "value"),
    [("vad_silence_ms", 50), ("vad_threshold", 1.5), ("vad_speculate_ms", 20_000)],
)
def test_bad_vad_settings_name_the_field(stt_faster_whisper, field, value):
    with pytest.raises(grpc.RpcError) as err:
        list(
            stt_stub(stt_faster_whisper).StreamingTranscribe(
                iter([config(**{field: value})]), timeout=30
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    detail = error_details_pb2.BadRequest()
    status.details[0].Unpack(detail)
    assert detail.field_violations[0].field == f"config.{field}"
