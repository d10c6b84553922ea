"""The TextGeneration contract on both backends (switched only by environment variables):
llama-cpp in-process with the real Gemma 3 270M weights, and the OpenAI-compatible backend
against llama-cpp-python's own OpenAI server serving the same weights on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from chorus.v1 import common_pb2, llm_pb2, llm_pb2_grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from devtools.processes import ServiceProcess
from tests.conftest import LLM_LIMITS
from tests.support.backends import each_backend
from tests.support.llm_servers import LLM_SPEC, gemma_gguf, llama_openai_server, serving

API_KEY = "sk-loopback-test-key-0f3c9a7e51d24b8f"
LIMITS = LLM_LIMITS
FRANCE = "What is the capital of France?"
# A base model continues a count for as long as it is allowed to: a reliably long generation.
COUNTING = "Count from one to a thousand: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


@pytest.fixture(scope="session")
def llm_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llm-logs")


@pytest.fixture(scope="session")
def gemma() -> Path:
    return gemma_gguf()


@pytest.fixture(scope="session")
def openai_base_url(llm_logs: Path, gemma: Path) -> Iterator[str]:
    with llama_openai_server(gemma, API_KEY, llm_logs / "llama-server.log", threads=2) as url:
        yield url


@pytest.fixture(scope="session")
def llm_openai(llm_logs: Path, openai_base_url: str) -> Iterator[ServiceProcess]:
    env = {
        **LIMITS,
        "CHORUS_LLM_BACKEND": "openai",
        "CHORUS_LLM_OPENAI__BASE_URL": openai_base_url,
        "CHORUS_LLM_MODEL": "gemma-3-270m",
        "CHORUS_LLM_OPENAI__KEY": API_KEY,
        "CHORUS_LLM_STOP_SEQUENCES": json.dumps(["\n\n", "###"]),
    }
    with serving(LLM_SPEC, env, llm_logs / "llm-openai.log") as proc:
        yield proc


llm_server = each_backend("llm")
"""Each backend in turn (``llm_<backend>``): the contract tests must pass on all of them."""


def stub(proc: ServiceProcess) -> llm_pb2_grpc.TextGenerationStub:
    return llm_pb2_grpc.TextGenerationStub(grpc.insecure_channel(proc.address))


def ask(text: str, **fields) -> llm_pb2.GenerateTextRequest:
    return llm_pb2.GenerateTextRequest(
        messages=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=text)], **fields
    )


def collect(responses) -> tuple[list[str], llm_pb2.TextGenerationResult]:
    deltas, results = [], []
    for response in responses:
        if response.HasField("delta"):
            assert not results, "a delta arrived after the result"
            deltas.append(response.delta.text)
        else:
            results.append(response.result)
    assert len(results) == 1
    return deltas, results[0]


def field_violation(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return bad.field_violations[0].field
    raise AssertionError("no BadRequest detail")


def admitted(proc: ServiceProcess) -> float:
    from tests.support.services import metric_value, scrape

    return metric_value(scrape(proc), "chorus_worker_admitted")


def wait_worker_free(proc: ServiceProcess, within: float) -> float:
    """Seconds until no work is running or queued; fails after ``within``."""
    started = time.monotonic()
    while admitted(proc) > 0:
        assert time.monotonic() - started < within, "the worker was not freed"
        time.sleep(0.02)
    return time.monotonic() - started


def test_factual_answer(llm_server):
    deltas, result = collect(
        stub(llm_server).Generate(ask(FRANCE, max_tokens=32, temperature=0.0), timeout=120)
    )
    assert "Paris" in result.text
    assert len(deltas) > 1
    assert "".join(deltas) == result.text
    assert result.usage.completion_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    if llm_server.env["CHORUS_LLM_BACKEND"] == "llama-cpp":
        # llama_cpp.server sends no usage in streams (it ignores stream_options), so through the
        # OpenAI backend the prompt's size is unknown and reported as 0, as the proto says.
        assert result.usage.prompt_tokens > 0
    assert result.finish_reason in (llm_pb2.FINISH_REASON_STOP, llm_pb2.FINISH_REASON_LENGTH)
    assert result.model == "gemma-3-270m"
    assert result.usage.processing_seconds > 0


def test_length_limit(llm_server):
    request = ask(COUNTING, max_tokens=5, temperature=0.0)
    _, result = collect(stub(llm_server).Generate(request, timeout=120))
    assert result.finish_reason == llm_pb2.FINISH_REASON_LENGTH
    assert 1 <= result.usage.completion_tokens <= 5


def test_stop_sequence_is_honoured(llm_server):
    free = ask(COUNTING, max_tokens=16, temperature=0.0)
    text = collect(stub(llm_server).Generate(free, timeout=120))[1].text
    stop = text[len(text) // 2 :][:3]  # a piece from the middle of the greedy reply
    request = ask(COUNTING, max_tokens=16, temperature=0.0, stop=[stop])
    _, result = collect(stub(llm_server).Generate(request, timeout=120))
    assert result.text == text[: text.index(stop)]
    assert stop not in result.text
    assert result.finish_reason == llm_pb2.FINISH_REASON_STOP


def test_seed_makes_sampling_repeatable(llm_server):
    request = ask("Tell me about cats.", max_tokens=16, temperature=1.0, top_p=0.95, seed=1234)
    first = collect(stub(llm_server).Generate(request, timeout=120))[1].text
    second = collect(stub(llm_server).Generate(request, timeout=120))[1].text
    assert first == second


def test_list_models(llm_server):
    models = stub(llm_server).ListModels(common_pb2.ListModelsRequest(), timeout=10).models
    (default,) = [m for m in models if m.is_default]
    assert default.id == "gemma-3-270m"
    assert default.backend in ("llama-cpp", "openai")
    assert default.loaded and default.description


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (llm_pb2.GenerateTextRequest(), "messages"),
        (ask(" "), "messages[0].content"),
        (ask("hi", max_tokens=100_000), "max_tokens"),
        (ask("hi", temperature=2.5), "temperature"),
        (ask("hi", top_p=0.0), "top_p"),
        (ask("hi", stop=["a", "b", "c", "d", "e"]), "stop"),
        (ask("hi", stop=[""]), "stop[0]"),
        (
            llm_pb2.GenerateTextRequest(
                messages=[
                    llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content="hi"),
                    llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content="be terse"),
                ]
            ),
            "messages[1].role",
        ),
    ],
    ids=[
        "no-messages",
        "empty-content",
        "max-tokens",
        "temperature",
        "top-p",
        "stops",
        "empty-stop",
        "late-system",
    ],
)
def test_bad_input_is_invalid_argument(llm_server, request_, field):
    with pytest.raises(grpc.RpcError) as error:
        collect(stub(llm_server).Generate(request_, timeout=10))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(error.value) == field


def test_over_long_conversation_is_resource_exhausted(llm_server):
    with pytest.raises(grpc.RpcError) as error:
        collect(stub(llm_server).Generate(ask("x" * 5000), timeout=10))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert field_violation(error.value) == "messages"


def test_unknown_model_is_not_found(llm_server):
    with pytest.raises(grpc.RpcError) as error:
        collect(stub(llm_server).Generate(ask("hi", model="no-such-model"), timeout=10))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def long_generation() -> llm_pb2.GenerateTextRequest:
    """About 1000 tokens: 25 s at this machine's best (~40 tok/s), far longer under load."""
    return ask(COUNTING, max_tokens=1000, temperature=0.0)


# A stopped generation frees its worker within one token (~25 ms here); the bound is loose so
# that a busy machine (other builds on the same two cores) does not fail it, yet far below
# the time the 1000-token generation would take if it were not stopped.
STOP_WITHIN_SECONDS = 8.0


def test_cancel_stops_tokens_and_frees_worker(llm_server):
    wait_worker_free(llm_server, within=30)
    call = stub(llm_server).Generate(long_generation(), timeout=120)
    received = 0
    for response in call:
        received += response.HasField("delta")
        if received == 3:
            break
    call.cancel()
    with pytest.raises(grpc.RpcError) as error:
        for _ in call:
            pass
    assert error.value.code() == grpc.StatusCode.CANCELLED
    wait_worker_free(llm_server, within=STOP_WITHIN_SECONDS)
    # The next call finds the worker free: it does not queue behind the cancelled generation.
    request = ask(FRANCE, max_tokens=8, temperature=0.0)
    _, result = collect(stub(llm_server).Generate(request, timeout=120))
    assert result.usage.queue_seconds < 0.5
    assert result.text


def test_deadline_exceeded_frees_worker(llm_server):
    wait_worker_free(llm_server, within=30)
    with pytest.raises(grpc.RpcError) as error:
        collect(stub(llm_server).Generate(long_generation(), timeout=1.0))
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_worker_free(llm_server, within=STOP_WITHIN_SECONDS)
    assert llm_server.health() == health_pb2.HealthCheckResponse.SERVING


def test_full_queue_is_resource_exhausted(llm_server):
    """One worker and one queue slot: a third concurrent call is refused at once."""
    wait_worker_free(llm_server, within=30)
    calls = [stub(llm_server).Generate(long_generation(), timeout=120) for _ in range(2)]
    drained = threading.Thread(target=lambda: [None for _ in _quietly(calls[1])])
    drained.start()
    try:
        deadline = time.monotonic() + 30
        while admitted(llm_server) < 2:
            assert time.monotonic() < deadline, "the two calls were not admitted"
            time.sleep(0.02)
        with pytest.raises(grpc.RpcError) as error:
            collect(stub(llm_server).Generate(ask("hi", max_tokens=4), timeout=10))
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        for call in calls:
            call.cancel()
        drained.join(30)
    wait_worker_free(llm_server, within=2 * STOP_WITHIN_SECONDS)


def _quietly(call):
    try:
        yield from call
    except grpc.RpcError:
        return


def test_openai_key_never_logged_and_bad_key_unauthenticated(llm_openai, openai_base_url, llm_logs):
    log = (llm_logs / "llm-openai.log").read_text()
    assert "DEBUG" in log  # the server logged at its most verbose level
    assert API_KEY not in log
    env = {
        **LIMITS,
        "CHORUS_LLM_BACKEND": "openai",
        "CHORUS_LLM_OPENAI__BASE_URL": openai_base_url,
        "CHORUS_LLM_MODEL": "gemma-3-270m",
        "CHORUS_LLM_OPENAI__KEY": "sk-wrong-key-5e1d",
    }
    with serving(LLM_SPEC, env, llm_logs / "llm-openai-bad-key.log") as proc:
        with pytest.raises(grpc.RpcError) as error:
            collect(stub(proc).Generate(ask(FRANCE, max_tokens=4), timeout=30))
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "sk-wrong-key-5e1d" not in (llm_logs / "llm-openai-bad-key.log").read_text()


def test_openai_server_unreachable_is_unavailable(llm_logs):
    from devtools.processes import free_port

    env = {
        **LIMITS,
        "CHORUS_LLM_BACKEND": "openai",
        "CHORUS_LLM_OPENAI__BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "CHORUS_LLM_OPENAI__KEY": API_KEY,
    }
    with serving(LLM_SPEC, env, llm_logs / "llm-openai-down.log") as proc:
        with pytest.raises(grpc.RpcError) as error:
            collect(stub(proc).Generate(ask(FRANCE, max_tokens=4), timeout=30))
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
