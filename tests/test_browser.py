"""The web interface in a real browser (Debian's chromium driven by Playwright) against the real
suite on loopback: one live conversation over ``/v1/realtime``, spoken through a fake microphone
(espeak-ng's speech in a WAV that chromium plays as the microphone, once), typed, interrupted,
stopped, with pictures, across a gateway restart, with an API key, and without an orchestrator.

The page keeps a small log of the session's events on ``window.chorusEvents`` (audio deltas
counted, not logged) and the AudioContext times of capture and playback on
``window.chorusMetrics``; the tests read those. Screenshots are saved at key steps as test
artifacts; their folder is printed (run with -s to see it, and the measured latency).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from devtools.processes import ServiceProcess
from services.common.audio import resample_pcm16
from tests.conftest import LLM_LIMITS, TURN_LIMITS, orchestrator_env
from tests.support.gateway import GatewayProcess, gateway_env, running_gateway
from tests.support.services import running
from tests.support.session import RATE, spoken
from tests.support.speech import wav_bytes, word_overlap

CHROMIUM = "/usr/bin/chromium"
QUESTION = "What is the capital of France?"
SECOND = "Tell me about the moon."
LONG = "Count from one to five hundred: 1, 2, 3, 4, 5, 6,"
"""A long reply: the offline model, greedy, counts until its token limit. Its audio goes out at
the pace of playback, so the response is still in progress seconds after it starts playing."""
API_KEY = "browser-test-key-3f9a1c"
WAV_RATE = 48000
BARGE_IN_AT = 10.0
"""Seconds of the barge-in microphone's silence before it speaks over the reply. The long reply
is asked for at once: its first audio plays within 1.5 s here (4 s with a benchmark beside
it), and its audio, a minute of counting sent at the pace of playback, is still going out when
the speech starts, however fast the machine."""
PTT_SPEECH_AT = 6.0
"""Seconds of the push-to-talk microphone's silence: the button is pressed before it."""

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed"
)


@pytest.fixture(scope="module")
def greedy_llm(logs: Path) -> Iterator[ServiceProcess]:
    """The offline text model with temperature 0 by default (the page sets none), so each
    question gets the same reply every run: a count runs to its token limit."""
    env = {
        **LLM_LIMITS,
        "CHORUS_LLM_BACKEND": "llama-cpp",
        "CHORUS_LLM_MODEL": "gemma-3-270m",
        "CHORUS_LLM_DEFAULT_TEMPERATURE": "0",
    }
    with running("llm", env, logs, "browser-greedy") as proc:
        yield proc


@pytest.fixture(scope="module")
def suite(
    logs: Path,
    stt_faster_whisper,
    tts_piper,
    greedy_llm,
    image_diffusers,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServiceProcess, GatewayProcess]]:
    """An orchestrator of this module's own (the last test stops it) and a gateway in front
    (one test restarts it on its port), sharing a conversation store and an artifact folder."""
    root = tmp_path_factory.mktemp("browser-stores")
    stores = {
        "CHORUS_ARTIFACTS_FOLDER": str(root / "artifacts"),
        "CHORUS_CONVERSATIONS_URL": f"sqlite:///{root / 'conversations.sqlite3'}",
    }
    env = {
        **orchestrator_env(stt_faster_whisper, tts_piper, greedy_llm, image_diffusers),
        **stores,
        "CHORUS_ORCH_MAX_TOKENS": "40",
        # Replies are spoken in pieces of at most 40 characters, so a story's long first
        # sentence does not hold its first audio back.
        "CHORUS_ORCH_SENTENCE_MAX_CHARS": "40",
    }
    with running("orchestrator", env, logs, "browser") as orchestrator:
        genv = gateway_env(
            orchestrator=orchestrator,
            stt=stt_faster_whisper,
            tts=tts_piper,
            llm=greedy_llm,
            image=image_diffusers,
            **TURN_LIMITS,
            **stores,
        )
        with running_gateway(genv, logs, "browser", ready="/readyz") as gateway:
            yield orchestrator, gateway


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("screenshots")
    print(f"\nbrowser screenshots: {folder}")
    return folder


class Microphone:
    """A WAV for chromium's fake microphone: silence, then speech, then silence; and where
    the speech ends in it (s)."""

    def __init__(self, path: Path, speech_end: float) -> None:
        self.path = path
        self.speech_end = speech_end


@pytest.fixture(scope="module")
def microphones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Microphone]:
    """espeak-ng's speech (the same samples every run) at 48 kHz mono PCM16."""
    tmp = tmp_path_factory.mktemp("mic")

    def make(name: str, lead: float, text: str | None, tail: float = 2.0) -> Microphone:
        parts = [np.zeros(int(lead * RATE), np.int16)]
        end = lead
        if text is not None:
            clip = spoken(text, tmp)
            parts.append(clip.pcm)
            end = lead + clip.speech_end_ms / 1000
        parts.append(np.zeros(int(tail * RATE), np.int16))
        pcm = resample_pcm16(np.concatenate(parts), RATE, WAV_RATE)
        path = tmp / f"{name}.wav"
        path.write_bytes(wav_bytes(pcm, WAV_RATE))
        return Microphone(path, end)

    return {
        "question": make("question", 2.0, QUESTION),
        "push-to-talk": make("push-to-talk", PTT_SPEECH_AT, QUESTION),
        "barge-in": make("barge-in", BARGE_IN_AT, SECOND),
        "silent": make("silent", 1.0, None),
    }


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


Opener = Callable[..., Any]


@pytest.fixture
def open_page(
    playwright, suite, microphones, request: pytest.FixtureRequest, artifacts: Path
) -> Iterator[Opener]:
    """``open_page(microphone, url=..., bypass_csp=True)``: a fresh chromium whose microphone
    plays that WAV once (from the moment the page opens it), on the interface."""
    opened: list[tuple[Any, Any, list[str]]] = []

    def open_(mic: str, url: str | None = None, bypass_csp: bool = True) -> Any:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphones[mic].path}%noloop",
                "--autoplay-policy=no-user-gesture-required",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
            ],
        )
        # bypass_csp: Playwright evaluates its wait conditions as strings, which the page's
        # CSP forbids; test_the_page_runs_under_its_csp runs without it.
        context = browser.new_context(
            permissions=["microphone"],
            viewport={"width": 1000, "height": 900},
            bypass_csp=bypass_csp,
        )
        context.set_default_timeout(90_000)
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.goto(f"{url or suite[1].url}/api/interface/")
        opened.append((browser, page, console))
        return page

    yield open_
    for n, (browser, page, console) in enumerate(opened):
        page.screenshot(path=str(artifacts / f"{request.node.name}-{n}-end.png"), full_page=True)
        seen = page.evaluate("window.chorusEvents || []")  # shown when the test fails
        zero = page.evaluate("window.chorusMetrics.micOpenedPerf") or 0
        print(
            " ".join(
                f"{(e['t'] - zero) / 1000:.1f}:{e['dir']}:{e['type']}:{e.get('status') or ''}"
                f"{e.get('message') or ''}"
                for e in seen
                if not e["type"].endswith("transcript.delta")
            )
        )
        print(page.locator("#chat").inner_text())
        browser.close()
        if console:
            print("\n".join(console))


def shot(page: Any, artifacts: Path, request: pytest.FixtureRequest, step: str) -> None:
    page.screenshot(path=str(artifacts / f"{request.node.name}-{step}.png"), full_page=True)


def start(page: Any, *, fast: bool = True, **settings: str) -> None:
    """Settings first (select values by id), then the one click that starts the session."""
    page.wait_for_function("document.getElementById('voice').options.length > 1")
    if fast:  # the English-only tiny model transcribes faster on this small machine
        page.locator("#transcription-model").select_option("whisper-tiny.en")
        page.locator("#language").select_option("en")
    for element, value in settings.items():
        field = page.locator(f"#{element.replace('_', '-')}")
        if value in ("checked", "unchecked"):
            field.set_checked(value == "checked")
        elif field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
            field.dispatch_event("change")
    page.locator("#start").click()
    page.wait_for_function("document.getElementById('status').dataset.state === 'live'")


def events(page: Any, kind: str) -> list[dict[str, Any]]:
    return page.evaluate("k => window.chorusEvents.filter(e => e.type === k)", kind)


def wait_event(page: Any, kind: str, count: int = 1, **match: Any) -> dict[str, Any]:
    """The ``count``-th logged event of ``kind`` whose fields equal ``match``."""
    page.wait_for_function(
        "([k, n, m]) => window.chorusEvents.filter(e => e.type === k"
        " && Object.entries(m).every(([f, v]) => e[f] === v)).length >= n",
        arg=[kind, count, match],
    )
    found = [e for e in events(page, kind) if all(e.get(f) == v for f, v in match.items())]
    return found[count - 1]


def user_said(page: Any, n: int = 1) -> str:
    """The n-th user message's settled text (a typed one, or a completed transcript)."""
    page.wait_for_function(
        "n => { const u = document.querySelectorAll('.msg.user[data-text]');"
        " return u.length >= n && u[n - 1].dataset.text.length > 0; }",
        arg=n,
    )
    return page.locator(".msg.user[data-text]").nth(n - 1).get_attribute("data-text")


def answer(page: Any, n: int = 1) -> dict[str, Any]:
    """The n-th completed response, with the reply's text on the page."""
    done = wait_event(page, "response.done", n, dir="in", status="completed")
    text = page.locator(f'.msg.assistant[data-item="{done["item_id"]}"] .text').inner_text()
    assert text.strip(), done
    return done


def type_message(page: Any, text: str) -> None:
    page.locator("#text").fill(text)
    page.locator("#text").press("Enter")  # keyboard only


def played(page: Any, item_id: str, seconds: float = 0.3) -> None:
    """Wait until the AudioContext's clock is ``seconds`` past the item's first sample."""
    page.wait_for_function(
        "([id, s]) => { const t = window.chorusMetrics.firstPlayed[id];"
        " return t !== undefined && window.chorusNow() > t + s; }",
        arg=[item_id, seconds],
    )


# -- tests ----------------------------------------------------------------------------------


def test_a_spoken_question_gets_a_spoken_answer(open_page, microphones, artifacts, request):
    """One click, then only the voice: the server's VAD ends the turn, the transcript shows
    live, the reply speaks through Web Audio; the time from the end of the speech to the first
    played sample of the reply is measured on the AudioContext's clock and printed."""
    page = open_page("question")
    start(page)
    shot(page, artifacts, request, "1-live")
    transcript = user_said(page)
    assert word_overlap(QUESTION, transcript) >= 0.6, transcript
    assert events(page, "conversation.item.input_audio_transcription.delta")  # live, in pieces
    shot(page, artifacts, request, "2-heard")
    done = answer(page)
    played(page, done["item_id"])
    metrics = page.evaluate("window.chorusMetrics")
    first = metrics["firstPlayed"][done["item_id"]]
    latency = first - (metrics["micOpenedAt"] + microphones["question"].speech_end)
    print(
        f"\nspeech end -> first played reply sample: {latency * 1000:.0f} ms (AudioContext clock;"
        f" capture started {1000 * (metrics['captureStartedAt'] - metrics['micOpenedAt']):.0f} ms"
        " after the microphone opened)"
    )
    assert 0 < latency < 60
    assert page.locator("#start").get_attribute("aria-pressed") == "true"  # still one session
    assert len(events(page, "session.created")) == 1
    history = page.evaluate("JSON.parse(localStorage.getItem('chorus.history'))")
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert page.locator("#error").is_hidden()
    # One live region, the status line: a screen reader hears states, not every token.
    assert page.evaluate("[...document.querySelectorAll('[aria-live]')].map(e => e.id)") == [
        "status"
    ]
    shot(page, artifacts, request, "3-answered")


def test_b_speaking_over_the_reply_interrupts_it(open_page, artifacts, request):
    """A typed question asks for a long reply; while it plays, the microphone speaks another
    question: playback stops at once, the item is truncated to what was heard, the server ends
    the response interrupted (turn_detected) and answers the spoken question, all in the one
    session that the typed question opened."""
    page = open_page("barge-in")
    start(page, max_tokens="400")
    type_message(page, LONG)
    page.wait_for_function("document.body.dataset.playing === 'true'")
    at = page.evaluate("window.chorusNow() - window.chorusMetrics.micOpenedAt")
    assert at < BARGE_IN_AT, f"the reply started playing only {at:.1f} s into the microphone"
    # The spoken question's reply, short (the count keeps the 400 it was asked with): its words
    # follow a history cut wherever the barge-in fell, and a long one takes minutes to speak.
    page.locator("#max-tokens").fill("40")
    page.locator("#max-tokens").dispatch_event("change")
    shot(page, artifacts, request, "1-playing")
    wait_event(page, "input_audio_buffer.speech_started", dir="in")
    cut = wait_event(page, "response.done", dir="in", reason="turn_detected")
    assert cut["status"] == "cancelled"
    assert page.evaluate("document.body.dataset.playing") == "false"
    # Silenced at once: on the speech_started, before the server's response.done.
    kinds = [e["type"] for e in page.evaluate("window.chorusEvents")]
    started = kinds.index("input_audio_buffer.speech_started")
    assert kinds[started + 1] == "playback.stopped", kinds[started:]
    truncate = wait_event(page, "conversation.item.truncate", dir="out")
    assert truncate["item_id"] == cut["item_id"] and truncate["audio_end_ms"] > 0
    truncated = wait_event(page, "conversation.item.truncated", dir="in", item_id=cut["item_id"])
    # The bubble keeps the heard words (the history too) and dims the rest.
    bubble = page.locator(f'.msg.assistant[data-item="{cut["item_id"]}"]')
    heard, whole = bubble.get_attribute("data-text"), bubble.locator(".text").inner_text()
    assert heard == truncated["transcript"] and whole.split()[: len(heard.split())] == heard.split()
    assert len(heard.split()) < len(whole.split()), (heard, whole)
    assert bubble.locator(".unheard").inner_text().strip()
    shot(page, artifacts, request, "2-interrupted")
    assert word_overlap(SECOND, user_said(page, 2)) >= 0.6
    answer(page, 1)  # the spoken question's reply: the first one to complete
    assert len(events(page, "session.created")) == 1
    assert page.locator(".msg.assistant .note").first.inner_text() == "(interrupted)"
    shot(page, artifacts, request, "3-answered")


def test_c_push_to_talk(open_page, microphones, artifacts, request):
    """Push to talk: turn detection off; holding Space on the button streams the microphone,
    releasing commits it and asks for the answer."""
    page = open_page("push-to-talk")
    start(page, mode="push-to-talk", speak="unchecked")
    talk = page.locator("#talk")
    assert talk.is_visible()
    talk.focus()
    page.keyboard.down("Space")
    assert talk.get_attribute("aria-pressed") == "true"
    at = page.evaluate("window.chorusNow() - window.chorusMetrics.micOpenedAt")
    assert at < PTT_SPEECH_AT - 0.5, f"pressed only {at:.1f} s into the microphone"
    shot(page, artifacts, request, "1-talking")
    page.wait_for_function(
        "end => window.chorusNow() - window.chorusMetrics.micOpenedAt > end",
        arg=microphones["push-to-talk"].speech_end + 0.6,
    )
    page.keyboard.up("Space")
    assert talk.get_attribute("aria-pressed") == "false"
    wait_event(page, "input_audio_buffer.committed", dir="in")
    assert not events(page, "input_audio_buffer.speech_started")  # no VAD in this mode
    assert word_overlap(QUESTION, user_said(page)) >= 0.6
    answer(page)
    shot(page, artifacts, request, "2-answered")


def test_d_stop_button(open_page, artifacts, request):
    """Stop cancels the reply being made, silences it and truncates it to what was heard; the
    next typed message is answered in the same session."""
    page = open_page("silent")
    start(page, max_tokens="400")
    type_message(page, LONG)
    page.wait_for_function("document.body.dataset.playing === 'true'")
    page.wait_for_timeout(500)
    shot(page, artifacts, request, "1-playing")
    page.locator("#stop").focus()
    page.keyboard.press("Enter")
    assert page.evaluate("document.body.dataset.playing") == "false"
    wait_event(page, "response.cancel", dir="out")
    done = wait_event(page, "response.done", dir="in")
    assert (done["status"], done["reason"]) == ("cancelled", "client_cancelled"), done
    truncate = wait_event(page, "conversation.item.truncate", dir="out")
    assert truncate["item_id"] == done["item_id"] and truncate["audio_end_ms"] >= 300
    wait_event(page, "conversation.item.truncated", dir="in")
    shot(page, artifacts, request, "2-stopped")
    page.locator("#speak").uncheck()
    page.locator("#max-tokens").fill("40")
    page.locator("#max-tokens").dispatch_event("change")
    type_message(page, QUESTION)
    answer(page)
    assert len(events(page, "session.created")) == 1


def test_e_picture_is_drawn_inline(open_page, artifacts, request):
    page = open_page("silent")
    start(page, image_mode="on", speak="unchecked")
    type_message(page, "Draw a picture of a red apple.")
    wait_event(page, "chorus.response.image.progress", dir="in")
    image = page.locator(".msg.assistant img")
    image.wait_for(state="visible")
    page.wait_for_function(
        "() => { const i = document.querySelector('.msg.assistant img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    answer(page)
    assert page.locator(".msg.assistant progress").count() == 0  # gave way to the image
    shot(page, artifacts, request, "1-picture")


def test_f_the_page_runs_under_its_csp(open_page, suite):
    """The interface's own Content-Security-Policy lets the page load its worklet and open
    the WebSocket to its own host (no bypass here; only waits that need no eval)."""
    page = open_page("silent", bypass_csp=False)
    page.locator("#voice option:nth-child(2)").wait_for(state="attached")
    page.locator("#start").click()
    page.locator('#status[data-state="live"]').wait_for()
    page.locator("#speak").uncheck()
    type_message(page, QUESTION)
    page.locator(".msg.assistant[data-text]").wait_for()


def test_g_reconnects_after_the_gateway_restarts(open_page, suite, artifacts, request):
    """The gateway stops mid-conversation (its sockets close with 1001) and comes back on its
    port: the page says so, reconnects with backoff, the new session starts from the stored
    conversation (the page sends no history), and the conversation goes on."""
    _, gateway = suite
    page = open_page("silent")
    start(page, speak="unchecked")
    type_message(page, QUESTION)
    answer(page)
    gateway.stop()
    page.wait_for_function("document.getElementById('status').dataset.state === 'reconnecting'")
    status = page.locator("#status").inner_text()
    assert "Reconnecting" in status, status
    shot(page, artifacts, request, "1-reconnecting")
    gateway.start()
    gateway.wait_ready(60)
    wait_event(page, "session.created", 2, dir="in")
    page.wait_for_function("document.getElementById('status').dataset.state === 'live'")
    kept = wait_event(page, "conversation.item.added", 2, dir="in")  # from the store
    assert kept["role"] == "assistant"
    sent = [e for e in events(page, "conversation.item.create") if e["dir"] == "out"]
    assert len(sent) == 1  # the typed question only: no history re-sent
    conversation = page.evaluate("localStorage.getItem('chorus.conversation')")
    stored = requests.get(f"{gateway.url}/v1/conversations/{conversation}", timeout=10).json()
    assert [i["role"] for i in stored["items"]] == ["user", "assistant"]
    assert stored["items"][0]["text"] == QUESTION
    shot(page, artifacts, request, "2-live-again")
    type_message(page, "And what is the capital of Spain?")
    answer(page, 2)
    assert gateway.alive()


def test_h_a_stored_conversation_is_reopened_and_deleted(open_page, suite, artifacts, request):
    """A spoken reply is kept with its conversation: after a reload the list shows it, opening
    it shows its messages and plays its audio from the artifact store, and deleting it (after a
    confirmation) removes it and its media."""
    _, gateway = suite
    page = open_page("silent")
    start(page)
    type_message(page, QUESTION)
    done = answer(page)
    played(page, done["item_id"], 0.5)
    conversation = page.evaluate("localStorage.getItem('chorus.conversation')")
    page.locator("#start").click()  # end the session: its items are stored
    page.wait_for_function("document.getElementById('status').dataset.state === 'idle'")
    url = f"{gateway.url}/v1/conversations/{conversation}"
    deadline = time.monotonic() + 30  # stored as the server's session ends, just after
    while len(requests.get(url, timeout=10).json()["items"]) < 2:
        assert time.monotonic() < deadline, "the session's items were not stored"
        time.sleep(0.1)
    page.evaluate("localStorage.clear()")
    page.reload()
    page.locator("#conversations summary").click()
    entry = page.locator(f'#conversation-list li[data-id="{conversation}"]')
    entry.locator(".open").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelectorAll('.msg').length === 2")
    assert page.locator(".msg.user").inner_text().strip() == QUESTION
    player = page.locator(".msg.assistant audio")
    player.wait_for(state="attached")
    assert page.locator("#status").inner_text().startswith("Opened")
    duration = page.evaluate(
        """() => new Promise((resolve) => {
             const a = document.querySelector('.msg.assistant audio');
             if (a.readyState >= 1) resolve(a.duration);
             a.addEventListener('loadedmetadata', () => resolve(a.duration));
           })"""
    )
    assert duration > 0.3, duration  # the reply, as it was spoken (500 ms or more of it)
    (link,) = requests.get(f"{gateway.url}/v1/conversations/{conversation}", timeout=10).json()[
        "items"
    ][1]["artifacts"]
    assert requests.get(link["url"], timeout=10).headers["Content-Type"] == "audio/wav"
    shot(page, artifacts, request, "1-reopened")
    page.once("dialog", lambda dialog: dialog.accept())
    entry.locator(".delete").click()
    entry.wait_for(state="detached")
    assert page.locator(".msg").count() == 0
    assert requests.get(link["url"], timeout=10).status_code == 404
    gone = requests.get(f"{gateway.url}/v1/conversations/{conversation}", timeout=10)
    assert gone.status_code == 404
    shot(page, artifacts, request, "2-deleted")


def test_i_api_key_flow(open_page, suite, logs, artifacts, request):
    """With a key configured the page asks for it (a wrong one is refused and asked again),
    keeps it for the browser session, loads voices and config with it and opens the socket
    with it; the config's notices show at the top."""
    env = {**suite[1].env, "CHORUS_GATEWAY_API_KEY": API_KEY}
    with running_gateway(env, logs, "browser-key", ready="/readyz") as keyed:
        page = open_page("silent", url=keyed.url)
        assert page.locator("#notices li").count() == 0  # /api/config needs the key
        form = page.locator("#key-form")
        form.wait_for(state="visible")
        assert page.locator("#status").get_attribute("data-state") == "key"
        page.locator("#api-key").fill("not-the-key")
        page.locator("#api-key").press("Enter")
        page.wait_for_function("document.getElementById('key-error').textContent.length > 0")
        assert form.is_visible()
        shot(page, artifacts, request, "1-wrong-key")
        page.locator("#api-key").fill(API_KEY)
        page.locator("#api-key").press("Enter")
        form.wait_for(state="hidden")
        assert page.evaluate("sessionStorage.getItem('chorus.apiKey')") == API_KEY
        # Offline, both generation services serve placeholders: one line each, with the
        # setting that brings a real model.
        page.locator("#notices li").nth(1).wait_for()
        notices = page.locator("#notices li").all_inner_texts()
        assert len(notices) == 2, notices
        assert "noise" in notices[0] and "CHORUS_IMAGE_MODEL" in notices[0], notices
        assert "CHORUS_LLM_MODEL" in notices[1], notices
        assert page.locator("#notices").get_attribute("aria-live") is None  # status line only
        start(page, speak="unchecked")
        type_message(page, QUESTION)
        answer(page)
        shot(page, artifacts, request, "2-answered")
        page.reload()  # the key is kept for the browser session
        page.wait_for_function("document.getElementById('voice').options.length > 1")
        assert form.is_hidden()


def test_j_orchestrator_down_shows_a_clear_error(open_page, suite, artifacts, request):
    orchestrator, gateway = suite
    orchestrator.stop()
    page = open_page("silent")
    page.wait_for_function("document.getElementById('voice').options.length > 1")
    page.locator("#start").click()
    error = page.locator("#error")
    error.wait_for(state="visible")
    text = page.locator("#error-text").inner_text()
    assert "unavailable" in text.lower(), text
    page.wait_for_function("document.getElementById('status').dataset.state === 'reconnecting'")
    assert "1013" in page.locator("#status").inner_text()
    shot(page, artifacts, request, "1-error")
    assert gateway.alive()
