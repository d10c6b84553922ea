"""The live session's pure logic, no call and no stub: the config a session reports
(``effective_config``), what of a spoken reply was heard at a truncation (``Item.heard``), and
the conversation's order, bound, version and reply context (``Conversation``)."""

from __future__ import annotations

from typing import Any

import pytest
from chorus.v1 import common_pb2, llm_pb2
from chorus.v1 import orchestrator_pb2 as pb

from services.common.errors import InvalidArgument, NotFound
from services.orchestrator.session import Conversation, Item, effective_config
from services.orchestrator.settings import OrchestratorSettings

_USER, _ASSISTANT = llm_pb2.CHAT_ROLE_USER, llm_pb2.CHAT_ROLE_ASSISTANT
_PCM = common_pb2.AUDIO_ENCODING_PCM_S16LE
_VAD, _NO_VAD = pb.TurnDetection.TYPE_SERVER_VAD, pb.TurnDetection.TYPE_NONE


# -- effective_config ------------------------------------------------------------------------


def test_an_empty_config_gets_every_default() -> None:
    # Settings off their own defaults, so a hard-coded value cannot pass for the setting.
    settings = OrchestratorSettings(
        session_vad_threshold=0.3, session_silence_ms=800, max_tokens=123
    )
    out = effective_config(pb.SessionConfig(), settings)
    assert out.type == pb.SESSION_TYPE_CONVERSATION
    assert out.input_audio_format == common_pb2.RawAudioFormat(
        encoding=_PCM, sample_rate_hz=24000, channels=1
    )
    assert out.output_encoding == _PCM
    assert out.output_sample_rate_hz == 24000
    assert out.image_mode == pb.IMAGE_MODE_OFF
    assert out.max_output_tokens == 123
    td = out.turn_detection
    assert td.type == _VAD
    assert td.threshold == pytest.approx(0.3)
    assert td.silence_duration_ms == 800
    assert td.prefix_padding_ms == 300
    assert td.HasField("create_response") and td.create_response is True
    assert td.HasField("interrupt_response") and td.interrupt_response is True


def test_the_config_given_is_not_changed() -> None:
    config = pb.SessionConfig()
    effective_config(config, OrchestratorSettings())
    assert config == pb.SessionConfig()


def test_explicit_values_are_kept() -> None:
    config = pb.SessionConfig(
        type=pb.SESSION_TYPE_TRANSCRIPTION,
        instructions="Be brief.",
        output_encoding=common_pb2.AUDIO_ENCODING_WAV,
        output_sample_rate_hz=16000,
        input_audio_format=common_pb2.RawAudioFormat(sample_rate_hz=48000, channels=2),
        image_mode=pb.IMAGE_MODE_AUTO,
        max_output_tokens=7,
        turn_detection=pb.TurnDetection(
            threshold=0.8,
            silence_duration_ms=100,
            prefix_padding_ms=0,
            create_response=False,
            interrupt_response=False,
        ),
    )
    out = effective_config(config, OrchestratorSettings(max_tokens=123))
    assert out.type == pb.SESSION_TYPE_TRANSCRIPTION
    assert out.instructions == "Be brief."
    assert out.output_encoding == common_pb2.AUDIO_ENCODING_WAV
    assert out.output_sample_rate_hz == 16000
    assert out.input_audio_format == common_pb2.RawAudioFormat(
        encoding=_PCM, sample_rate_hz=48000, channels=2
    )
    assert out.image_mode == pb.IMAGE_MODE_AUTO
    assert out.max_output_tokens == 7
    td = out.turn_detection
    assert td.type == _VAD  # unset: server VAD, with the explicit knobs kept
    assert td.threshold == pytest.approx(0.8)
    assert td.silence_duration_ms == 100
    # Zero is a value given (the fields are optional), not "unset": no padding stays no padding.
    assert td.HasField("prefix_padding_ms") and td.prefix_padding_ms == 0
    assert td.HasField("create_response") and td.create_response is False
    assert td.HasField("interrupt_response") and td.interrupt_response is False


def test_no_turn_detection_clears_the_vad_fields() -> None:
    config = pb.SessionConfig(
        turn_detection=pb.TurnDetection(
            type=_NO_VAD, threshold=0.9, silence_duration_ms=5, create_response=True
        )
    )
    td = effective_config(config, OrchestratorSettings()).turn_detection
    # Out-of-range VAD knobs are not checked either: they no longer exist.
    assert td == pb.TurnDetection(type=_NO_VAD)
    for name in (
        "threshold",
        "silence_duration_ms",
        "prefix_padding_ms",
        "create_response",
        "interrupt_response",
    ):
        assert not td.HasField(name), name


def _fmt(**fields: Any) -> dict[str, Any]:
    return {"input_audio_format": common_pb2.RawAudioFormat(**fields)}


def _td(**fields: Any) -> dict[str, Any]:
    return {"turn_detection": pb.TurnDetection(**fields)}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (
            _fmt(encoding=common_pb2.AUDIO_ENCODING_WAV),
            "config.input_audio_format.encoding",
        ),
        (
            _fmt(encoding=common_pb2.AUDIO_ENCODING_OGG_OPUS),
            "config.input_audio_format.encoding",
        ),
        (_fmt(sample_rate_hz=7999), "config.input_audio_format.sample_rate_hz"),
        (_fmt(sample_rate_hz=192_001), "config.input_audio_format.sample_rate_hz"),
        (_fmt(channels=9), "config.input_audio_format.sample_rate_hz"),
        ({"output_sample_rate_hz": 7999}, "config.output_sample_rate_hz"),
        ({"output_sample_rate_hz": 192_001}, "config.output_sample_rate_hz"),
        (_td(threshold=0.0), "config.turn_detection.threshold"),
        (_td(threshold=1.0), "config.turn_detection.threshold"),
        (_td(silence_duration_ms=50), "config.turn_detection.silence_duration_ms"),
        (_td(silence_duration_ms=10_001), "config.turn_detection.silence_duration_ms"),
        (_td(prefix_padding_ms=20_000), "config.turn_detection.prefix_padding_ms"),
        ({"instructions": "x" * 11}, "config.instructions"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_an_invalid_field_is_named(fields: dict[str, Any], field: str) -> None:
    settings = OrchestratorSettings(max_text_chars=10)
    with pytest.raises(InvalidArgument) as raised:
        effective_config(pb.SessionConfig(**fields), settings)
    assert raised.value.field == field


@pytest.mark.parametrize(
    "fields",
    [
        _fmt(sample_rate_hz=8000),
        _fmt(sample_rate_hz=192_000, channels=8),
        {"output_sample_rate_hz": 8000},
        {"output_sample_rate_hz": 192_000},
        _td(silence_duration_ms=100),
        _td(silence_duration_ms=10_000),
        _td(prefix_padding_ms=10_000),
        {"instructions": "x" * 10},
    ],
)
def test_the_bounds_themselves_are_accepted(fields: dict[str, Any]) -> None:
    effective_config(pb.SessionConfig(**fields), OrchestratorSettings(max_text_chars=10))


# -- Item.heard ------------------------------------------------------------------------------


def _reply(*spoken: tuple[str, float]) -> Item:
    return Item("item_a", _ASSISTANT, " ".join(s for s, _ in spoken), spoken=list(spoken))


@pytest.mark.parametrize(
    ("audio_end_ms", "heard"),
    [
        (0, ""),
        (499, ""),  # a quarter of a word's share: no word yet
        (1000, "One two"),
        (1999, "One two three"),
        (2000, "One two three four."),
        (2500, "One two three four. Five"),
        (3000, "One two three four. Five six."),
        (10_000, "One two three four. Five six."),
    ],
)
def test_heard_is_the_share_of_words_played(audio_end_ms: int, heard: str) -> None:
    item = _reply(("One two three four.", 2.0), ("Five six.", 1.0))
    assert item.heard(audio_end_ms) == heard


def test_a_zero_duration_sentence_divides_nothing() -> None:
    item = _reply(("One two.", 1.0), ("Silent.", 0.0), ("Three four.", 1.0))
    # It takes no time, so it is heard as soon as the sentence before it is.
    assert item.heard(999) == "One"
    assert item.heard(1000) == "One two. Silent."
    assert item.heard(1500) == "One two. Silent. Three"
    # The only way to stop inside a zero-duration sentence: nothing of it, no ZeroDivisionError.
    assert _reply(("Silent.", 0.0), ("One.", 1.0)).heard(-1) == ""


def test_an_item_with_no_audio_heard_nothing() -> None:
    assert _reply().heard(5000) == ""


# -- Conversation ----------------------------------------------------------------------------


def _item(item_id: str, text: str = "hi", role: llm_pb2.ChatRole = _USER) -> Item:
    return Item(item_id, role, text)


def _ids(conversation: Conversation) -> list[str]:
    return [item.id for item in conversation.items]


def test_add_returns_the_previous_item_id() -> None:
    conversation = Conversation(max_items=10)
    assert conversation.add(_item("a")) == ("", [])
    assert conversation.add(_item("b")) == ("a", [])
    assert conversation.add(_item("c"), "") == ("b", [])
    assert conversation.add(_item("x"), "a") == ("a", [])
    assert conversation.add(_item("r"), "root") == ("", [])
    assert conversation.add(_item("z"), "c") == ("c", [])
    assert _ids(conversation) == ["r", "a", "x", "b", "c", "z"]
    assert conversation.get("x") is conversation.items[2]
    assert conversation.get("nope") is None


def test_add_after_an_unknown_item_is_refused() -> None:
    conversation = Conversation(max_items=10)
    conversation.add(_item("a"))
    with pytest.raises(NotFound) as raised:
        conversation.add(_item("b"), "missing")
    assert raised.value.field == "previous_item_id"
    assert _ids(conversation) == ["a"]
    assert conversation.version == 1


def test_the_bound_drops_the_oldest() -> None:
    conversation = Conversation(max_items=3)
    for item_id in "abc":
        assert conversation.add(_item(item_id))[1] == []
    previous, dropped = conversation.add(_item("d"))
    assert previous == "c"
    assert [item.id for item in dropped] == ["a"]
    assert _ids(conversation) == ["b", "c", "d"]


def test_the_previous_id_is_counted_after_the_drop() -> None:
    conversation = Conversation(max_items=3)
    for item_id in "abc":
        conversation.add(_item(item_id))
    # After "b": "a" goes, and "b" is still the item before the new one.
    previous, dropped = conversation.add(_item("x"), "b")
    assert (previous, [item.id for item in dropped]) == ("b", ["a"])
    assert _ids(conversation) == ["b", "x", "c"]
    # After "b", the oldest: "b" goes, and the new item is now the first.
    previous, dropped = conversation.add(_item("y"), "b")
    assert (previous, [item.id for item in dropped]) == ("", ["b"])
    assert _ids(conversation) == ["y", "x", "c"]


def test_several_oldest_are_dropped_when_the_bound_is_one() -> None:
    conversation = Conversation(max_items=1)
    conversation.add(_item("a"))
    previous, dropped = conversation.add(_item("b"))
    assert (previous, [item.id for item in dropped]) == ("", ["a"])
    assert _ids(conversation) == ["b"]


def test_delete() -> None:
    conversation = Conversation(max_items=10)
    for item_id in "abc":
        conversation.add(_item(item_id))
    conversation.delete("b")
    assert _ids(conversation) == ["a", "c"]
    with pytest.raises(NotFound) as raised:
        conversation.delete("b")
    assert raised.value.field == "item_id"
    assert _ids(conversation) == ["a", "c"]


def test_every_change_bumps_the_version() -> None:
    conversation = Conversation(max_items=2)
    seen = [conversation.version]
    conversation.add(_item("a"))
    seen.append(conversation.version)
    conversation.add(_item("b"), "root")
    seen.append(conversation.version)
    conversation.add(_item("c"))  # over the bound: still one change
    seen.append(conversation.version)
    conversation.touch()
    seen.append(conversation.version)
    conversation.delete("c")
    seen.append(conversation.version)
    assert seen == sorted(set(seen)), seen  # strictly increasing
    before = conversation.version
    with pytest.raises(NotFound):
        conversation.delete("c")
    with pytest.raises(NotFound):
        conversation.add(_item("d"), "c")
    assert conversation.version == before  # a refused change is no change


def _conversation(*texts: str) -> Conversation:
    conversation = Conversation(max_items=100)
    for n, text in enumerate(texts):
        conversation.add(_item(f"i{n}", text, _USER if n % 2 == 0 else _ASSISTANT))
    return conversation


def _context_ids(conversation: Conversation, **limits: int) -> list[str]:
    return [item.id for item in conversation.context(OrchestratorSettings(**limits))]


def test_context_is_oldest_first_without_empty_items() -> None:
    conversation = _conversation("one", "", "two", "   ", "three")
    context = conversation.context(OrchestratorSettings())
    assert [item.id for item in context] == ["i0", "i2", "i4"]
    assert [item.text for item in context] == ["one", "two", "three"]


def test_context_keeps_the_newest_messages_and_one_more() -> None:
    conversation = _conversation("a", "b", "c", "d", "e")
    # max_history_messages counts the history before the message being answered.
    assert _context_ids(conversation, max_history_messages=2) == ["i2", "i3", "i4"]
    assert _context_ids(conversation, max_history_messages=0) == ["i4"]
    assert _context_ids(conversation, max_history_messages=4) == ["i0", "i1", "i2", "i3", "i4"]


def test_empty_items_do_not_count_against_the_message_limit() -> None:
    conversation = _conversation("a", "b", "", "", "c")
    assert _context_ids(conversation, max_history_messages=1) == ["i1", "i4"]


def test_context_keeps_the_newest_within_the_character_limit() -> None:
    conversation = _conversation("x" * 30, "y" * 20, "z" * 20, "w" * 10)
    # 10 + 20 + 20 = 50 fit exactly; the 30 more do not.
    assert _context_ids(conversation, max_history_messages=10, max_history_chars=50) == [
        "i1",
        "i2",
        "i3",
    ]
    assert _context_ids(conversation, max_history_messages=10, max_history_chars=49) == [
        "i2",
        "i3",
    ]


def test_characters_are_counted_stripped() -> None:
    padded = " " * 5 + "b" * 10 + "\n" * 5
    conversation = _conversation("a" * 5, padded, "c" * 5)
    # 5 + 10 + 5 = 20 fit; with the padding counted, 30 would not.
    assert _context_ids(conversation, max_history_chars=20) == ["i0", "i1", "i2"]
    assert conversation.context(OrchestratorSettings())[1].text == padded


def test_the_history_has_no_gaps() -> None:
    # The middle item is over the limit; the smaller one before it would fit, but a history
    # with a hole in it would be a conversation that never happened.
    conversation = _conversation("a" * 5, "b" * 40, "c" * 10)
    assert _context_ids(conversation, max_history_chars=30) == ["i2"]


def test_both_limits_apply_and_the_tighter_wins() -> None:
    conversation = _conversation("a" * 10, "b" * 10, "c" * 10, "d" * 10)
    assert _context_ids(conversation, max_history_messages=2, max_history_chars=50) == [
        "i1",
        "i2",
        "i3",
    ]
    assert _context_ids(conversation, max_history_messages=2, max_history_chars=25) == [
        "i2",
        "i3",
    ]


def test_the_newest_item_is_kept_whatever_its_length() -> None:
    # Its length is bounded on the way in (max_text_chars); the history limits are for the rest.
    conversation = _conversation("short", "x" * 100)
    assert _context_ids(conversation, max_history_messages=0, max_history_chars=50) == ["i1"]
    assert _context_ids(conversation, max_history_messages=5, max_history_chars=0) == ["i1"]


def test_an_empty_conversation_has_no_context() -> None:
    assert _conversation().context(OrchestratorSettings()) == []
    assert _conversation("", " ").context(OrchestratorSettings()) == []


def test_add_at_root_of_a_full_conversation_keeps_the_new_item() -> None:
    """The bound drops the oldest item other than the one just added, so an item inserted at
    "root" of a full conversation stays (its client is told of it, then of what was dropped)."""
    conversation = Conversation(max_items=2)
    a, b, new = (Item(name, llm_pb2.CHAT_ROLE_USER, name) for name in ("a", "b", "new"))
    conversation.add(a)
    conversation.add(b)
    previous, dropped = conversation.add(new, "root")
    assert (previous, dropped) == ("", [a])
    assert [i.id for i in conversation.items] == ["new", "b"]
