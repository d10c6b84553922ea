"""The web interface in a real browser (Debian's chromium driven by Playwright) against the real
suite on loopback: type, speak through a fake microphone, ask for a picture, lose the server.

Screenshots are saved as test artifacts; their folder is printed (run with -s to see it).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from chorus.v1 import tts_pb2

from devtools.processes import ServiceProcess
from tests.conftest import TURN_LIMITS, orchestrator_env, tts_stub
from tests.support.gateway import GatewayProcess, gateway_env, running_gateway
from tests.support.services import running
from tests.support.speech import read_wav, wav_bytes, word_overlap

CHROMIUM = "/usr/bin/chromium"
QUESTION = "What is the capital of France?"

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed"
)


@pytest.fixture(scope="module")
def suite(
    logs: Path, stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers
) -> Iterator[tuple[ServiceProcess, GatewayProcess]]:
    """An orchestrator of this module's own (the last test stops it) and a gateway in front."""
    env = {
        **orchestrator_env(stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers),
        "CHORUS_ORCH_MAX_TOKENS": "40",
    }
    with running("orchestrator", env, logs, "browser") as orchestrator:
        genv = gateway_env(
            orchestrator=orchestrator,
            stt=stt_faster_whisper,
            tts=tts_piper,
            llm=llm_llama_cpp,
            image=image_diffusers,
            **TURN_LIMITS,
        )
        with running_gateway(genv, logs, "browser", ready="/readyz") as gateway:
            yield orchestrator, gateway


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("screenshots")
    print(f"\nbrowser screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def microphone_wav(tts_piper, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The question spoken by Piper, with 0.3 s of silence before and 0.5 s after (after the
    file ends, chromium repeats its last 10 ms: silence)."""
    spoken = (
        tts_stub(tts_piper).Synthesize(tts_pb2.SynthesizeRequest(text=QUESTION), timeout=60).audio
    )
    samples, rate = read_wav(spoken)
    padded = np.concatenate(
        [np.zeros(int(0.3 * rate), np.int16), samples, np.zeros(int(0.5 * rate), np.int16)]
    )
    path = tmp_path_factory.mktemp("mic") / "question.wav"
    path.write_bytes(wav_bytes(padded, rate))
    return path, len(padded) / rate


@pytest.fixture(scope="module")
def browser(microphone_wav: tuple[Path, float]):
    from playwright.sync_api import sync_playwright

    wav, _ = microphone_wav
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}%noloop",
                "--autoplay-policy=no-user-gesture-required",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, suite, request: pytest.FixtureRequest, artifacts: Path):
    _, gateway = suite
    # bypass_csp: Playwright evaluates its wait conditions as strings, which the page's CSP forbids.
    context = browser.new_context(
        permissions=["microphone"], viewport={"width": 1000, "height": 800}, bypass_csp=True
    )
    context.set_default_timeout(60_000)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.goto(f"{gateway.url}/api/interface/")
    page.wait_for_function("document.getElementById('voice').options.length > 1")
    yield page
    page.screenshot(path=str(artifacts / f"{request.node.name}.png"), full_page=True)
    context.close()
    if console:
        print("\n".join(console))


def assistant_reply(page) -> str:
    page.wait_for_function(
        "() => { const m = document.querySelectorAll('.msg.assistant .text');"
        " return m.length && m[m.length - 1].textContent.trim().length > 0"
        " && document.getElementById('send').disabled === false; }"
    )
    return page.locator(".msg.assistant .text").last.inner_text()


def test_a_typed_question_is_answered_and_spoken(page, artifacts: Path):
    page.locator("#text").fill(QUESTION)
    page.locator("#text").press("Enter")  # keyboard only
    assert assistant_reply(page).strip()
    # The reply's audio plays: the element's clock advances.
    page.wait_for_function("document.getElementById('player').currentTime > 0.3")
    assert page.locator("#error").is_hidden()
    history = page.evaluate("JSON.parse(localStorage.getItem('chorus.history'))")
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[0]["content"] == QUESTION
    page.screenshot(path=str(artifacts / "test_a_answered.png"), full_page=True)
    # "New conversation" forgets the history kept in the browser.
    page.locator("#new-conversation").click()
    assert page.evaluate("localStorage.getItem('chorus.history')") is None
    assert page.locator(".msg").count() == 0


def test_b_spoken_question_through_the_microphone(page, microphone_wav):
    _, seconds = microphone_wav
    page.locator("#speak").uncheck()  # text replies are enough here
    page.locator("#language").select_option("en")
    mic = page.locator("#mic")
    mic.focus()
    page.keyboard.down("Space")  # push to talk, from the keyboard
    page.wait_for_function("document.getElementById('mic').getAttribute('aria-pressed') === 'true'")
    page.wait_for_timeout(int(seconds * 1000) + 300)
    page.keyboard.up("Space")
    page.wait_for_function(
        "() => { const u = document.querySelector('.msg.user');"
        " return u && u.dataset.text !== undefined && u.dataset.text.length > 0; }"
    )
    transcript = page.locator(".msg.user").first.get_attribute("data-text")
    assert word_overlap(QUESTION, transcript) >= 0.8, transcript
    assert assistant_reply(page).strip()
    assert page.locator("#error").is_hidden()


def test_c_picture_is_drawn_inline(page):
    page.locator("#image-mode").select_option("on")
    page.locator("#speak").uncheck()
    page.locator("#text").fill("Draw a picture of a red apple.")
    page.locator("#send").click()
    image = page.locator(".msg.assistant img")
    image.wait_for(state="visible")
    page.wait_for_function(
        "() => { const i = document.querySelector('.msg.assistant img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    assert (
        page.locator(".msg.assistant progress").count() == 0
    )  # the progress bar gave way to the image


def test_c_keep_listening_sends_after_a_pause(page):
    """Hands-free: with "Keep listening" on, speech starts a recording by itself and the pause
    after it sends the turn; the page then listens again."""
    page.locator("#speak").uncheck()
    page.locator("#language").select_option("en")
    page.locator("#keep-listening").check()  # the fake microphone starts playing the question
    page.wait_for_function(
        "() => { const u = document.querySelector('.msg.user');"
        " return u && u.dataset.text !== undefined && u.dataset.text.length > 0; }"
    )
    assert page.locator("#mic").get_attribute("aria-pressed") == "false"  # stopped by the pause
    transcript = page.locator(".msg.user").first.get_attribute("data-text")
    assert word_overlap(QUESTION, transcript) >= 0.6, transcript  # onset may be clipped
    assert assistant_reply(page).strip()
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Listening')")
    page.wait_for_timeout(1500)  # the microphone is silent now: no second turn starts
    assert page.locator(".msg.user").count() == 1
    assert page.locator("#error").is_hidden()


def test_c_history_is_kept_within_the_turn_limits(page, suite):
    """The page trims its history to the orchestrator's limits, which it learns from
    /api/config (8 messages in this suite), never to numbers of its own."""
    _, gateway = suite
    served = requests.get(f"{gateway.url}/api/config", timeout=10).json()
    assert page.evaluate("limits") == served and served["max_history_messages"] == 8
    page.evaluate("for (let i = 0; i < 10; i++) remember(`question ${i}`, `answer ${i}`)")
    history = page.evaluate("JSON.parse(localStorage.getItem('chorus.history'))")
    assert [m["content"] for m in history[-2:]] == ["question 9", "answer 9"]
    assert len(history) == 8
    chars = served["max_history_chars"]
    page.evaluate(f"remember('q'.repeat({chars // 2}), 'a'.repeat({chars // 2}))")
    history = page.evaluate("JSON.parse(localStorage.getItem('chorus.history'))")
    assert sum(len(m["content"]) for m in history) <= chars and len(history) == 2


def test_d_orchestrator_down_shows_a_clear_error(page, suite):
    orchestrator, gateway = suite
    orchestrator.stop()
    page.locator("#text").fill("Are you there?")
    page.locator("#text").press("Enter")
    error = page.locator("#error")
    error.wait_for(state="visible")
    text = page.locator("#error-text").inner_text()
    assert "unavailable" in text.lower(), text
    assert gateway.alive()
