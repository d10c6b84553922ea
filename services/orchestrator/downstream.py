"""Stubs for the four model services, on channels opened once per process."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from chorus.v1 import (
    image_pb2,
    image_pb2_grpc,
    llm_pb2,
    llm_pb2_grpc,
    stt_pb2,
    stt_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)

from services.common.clients import open_channel
from services.orchestrator.settings import OrchestratorSettings


def _name(module: object, service: str) -> str:
    return str(module.DESCRIPTOR.services_by_name[service].full_name)  # type: ignore[attr-defined]


STT = _name(stt_pb2, "SpeechToText")
TTS = _name(tts_pb2, "TextToSpeech")
LLM = _name(llm_pb2, "TextGeneration")
IMAGE = _name(image_pb2, "ImageGeneration")


@dataclass
class Downstream:
    stt: stt_pb2_grpc.SpeechToTextStub
    tts: tts_pb2_grpc.TextToSpeechStub
    llm: llm_pb2_grpc.TextGenerationStub
    image: image_pb2_grpc.ImageGenerationStub
    channels: list[grpc.aio.Channel]

    @classmethod
    def connect(cls, settings: OrchestratorSettings) -> Downstream:
        """Open channels (lazily connecting): through Envoy when configured, else directly."""
        size = settings.max_message_bytes
        attempts = settings.max_attempts
        if settings.envoy_address:
            # Envoy retries on other replicas itself; retrying here too would multiply attempts.
            attempts = min(attempts, 2)
            shared = open_channel(settings.envoy_address, [STT, TTS, LLM, IMAGE], size, attempts)
            channels = {name: shared for name in (STT, TTS, LLM, IMAGE)}
        else:
            channels = {
                STT: open_channel(settings.stt_address, [STT], size, attempts),
                TTS: open_channel(settings.tts_address, [TTS], size, attempts),
                LLM: open_channel(settings.llm_address, [LLM], size, attempts),
                IMAGE: open_channel(settings.image_address, [IMAGE], size, attempts),
            }
        return cls(
            stt=stt_pb2_grpc.SpeechToTextStub(channels[STT]),
            tts=tts_pb2_grpc.TextToSpeechStub(channels[TTS]),
            llm=llm_pb2_grpc.TextGenerationStub(channels[LLM]),
            image=image_pb2_grpc.ImageGenerationStub(channels[IMAGE]),
            channels=list({id(c): c for c in channels.values()}.values()),
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)
