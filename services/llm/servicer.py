"""gRPC adapter between ``chorus.v1.TextGeneration`` and a text generation backend."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from functools import partial

import grpc
from chorus.v1 import common_pb2, llm_pb2, llm_pb2_grpc

from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.models import ModelManager, list_models
from services.common.workers import WorkerPool, WorkResult
from services.llm.backends.base import GenerationRequest, Message, TextGenerationBackend
from services.llm.settings import LlmSettings

_ROLES = {
    llm_pb2.CHAT_ROLE_UNSPECIFIED: "user",
    llm_pb2.CHAT_ROLE_USER: "user",
    llm_pb2.CHAT_ROLE_SYSTEM: "system",
    llm_pb2.CHAT_ROLE_ASSISTANT: "assistant",
}
_FINISH = {
    "stop": llm_pb2.FINISH_REASON_STOP,
    "length": llm_pb2.FINISH_REASON_LENGTH,
}
MAX_STOP_CHARS = 64


class TextGenerationServicer(llm_pb2_grpc.TextGenerationServicer):
    def __init__(
        self,
        settings: LlmSettings,
        models: ModelManager[TextGenerationBackend],
        workers: WorkerPool,
        descriptions: dict[str, str],
        placeholders: frozenset[str] = frozenset(),
    ) -> None:
        """``placeholders``: the ids of models that are stand-ins (``is_placeholder``)."""
        self._settings = settings
        self._models = models
        self._workers = workers
        self._descriptions = descriptions
        self._placeholders = placeholders

    def _validate(self, request: llm_pb2.GenerateTextRequest) -> GenerationRequest:
        s = self._settings
        if not request.messages:
            raise InvalidArgument(
                "messages is empty; send at least one user message", field="messages"
            )
        if len(request.messages) > s.max_messages:
            raise ResourceExhausted(
                f"{len(request.messages)} messages; the limit is {s.max_messages}", field="messages"
            )
        has_system = any(m.role == llm_pb2.CHAT_ROLE_SYSTEM for m in request.messages)
        # The configured default prompt applies only when the caller gave no instructions.
        system = request.system_prompt or ("" if has_system else s.system_prompt)
        messages = [Message("system", system)] if system.strip() else []
        seen_other = False
        for i, message in enumerate(request.messages):
            role = _ROLES.get(message.role)
            if role is None:
                raise InvalidArgument(f"unknown role {message.role}", field=f"messages[{i}].role")
            if not message.content.strip():
                raise InvalidArgument("content is empty", field=f"messages[{i}].content")
            if role == "system" and seen_other:
                raise InvalidArgument(
                    "system messages may only come before the rest of the conversation",
                    field=f"messages[{i}].role",
                )
            seen_other = seen_other or role != "system"
            messages.append(Message(role, message.content))  # type: ignore[arg-type]
        chars = sum(len(m.content) for m in messages)
        if chars > s.max_input_chars:
            raise ResourceExhausted(
                f"the conversation has {chars} characters; the limit is {s.max_input_chars}",
                field="messages",
            )
        max_tokens = request.max_tokens or s.default_max_tokens
        if max_tokens > s.max_tokens_limit:
            raise InvalidArgument(
                f"max_tokens {max_tokens} is over the limit of {s.max_tokens_limit}",
                field="max_tokens",
            )
        temperature = (
            request.temperature if request.HasField("temperature") else s.default_temperature
        )
        if not (math.isfinite(temperature) and 0 <= temperature <= 2):
            raise InvalidArgument(f"temperature {temperature} is outside 0..2", field="temperature")
        top_p = request.top_p if request.HasField("top_p") else s.default_top_p
        if not (math.isfinite(top_p) and 0 < top_p <= 1):
            raise InvalidArgument(f"top_p {top_p} is outside (0, 1]", field="top_p")
        if len(request.stop) > s.max_stop_sequences:
            raise InvalidArgument(
                f"{len(request.stop)} stop sequences; the limit is {s.max_stop_sequences}",
                field="stop",
            )
        for i, stop in enumerate(request.stop):
            if not stop or len(stop) > MAX_STOP_CHARS:
                raise InvalidArgument(
                    f"stop sequences must have 1..{MAX_STOP_CHARS} characters", field=f"stop[{i}]"
                )
        return GenerationRequest(
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=list(dict.fromkeys([*request.stop, *s.stop_sequences])),
            seed=request.seed if request.HasField("seed") else None,
        )

    async def Generate(
        self, request: llm_pb2.GenerateTextRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.GenerateTextResponse]:
        job = self._validate(request)
        model_id = self._models.resolve(request.model)
        async with self._models.use(model_id) as backend:
            async for item in self._workers.stream(partial(backend.generate, job)):
                if isinstance(item, WorkResult):
                    result = item
                else:
                    yield llm_pb2.GenerateTextResponse(delta=llm_pb2.TextDelta(text=item))
        completion = result.value
        yield llm_pb2.GenerateTextResponse(
            result=llm_pb2.TextGenerationResult(
                text=completion.text,
                finish_reason=_FINISH.get(completion.finish_reason, llm_pb2.FINISH_REASON_STOP),
                model=model_id,
                usage=llm_pb2.TokenUsage(
                    prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens,
                    total_tokens=completion.prompt_tokens + completion.completion_tokens,
                    processing_seconds=result.run_seconds,
                    queue_seconds=result.queue_seconds,
                ),
            )
        )

    async def ListModels(
        self, request: common_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ListModelsResponse:
        return list_models(
            self._models, self._settings.backend, self._descriptions, self._placeholders
        )
