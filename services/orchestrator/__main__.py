"""Run the orchestrator: ``python -m services.orchestrator`` (CHORUS_ORCH_* variables)."""

from chorus.v1 import orchestrator_pb2, orchestrator_pb2_grpc

from services.common.artifacts import ArtifactSettings
from services.common.conversations import ConversationSettings
from services.common.server import ChorusServer, ServiceDefinition, serve
from services.orchestrator.conversations import ConversationsServicer
from services.orchestrator.downstream import Downstream
from services.orchestrator.servicer import OrchestratorServicer
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.storage import Stores
from services.orchestrator.sweeper import ArtifactSweeper

SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"].full_name
CONVERSATIONS = orchestrator_pb2.DESCRIPTOR.services_by_name["Conversations"].full_name


def build_server(settings: OrchestratorSettings) -> ChorusServer:
    downstream = Downstream.connect(settings)
    # Settings read (and checked) at start; the stores open on first use (CHORUS_ARTIFACTS_*,
    # CHORUS_CONVERSATIONS_*), so a replica that stores nothing touches no database.
    artifact_settings = ArtifactSettings()
    stores = Stores(artifact_settings, ConversationSettings())
    servicer = OrchestratorServicer(settings, downstream, stores)
    conversations = ConversationsServicer(stores)
    # Retention: each replica sweeps on its own schedule (idempotent; see sweeper.py).
    sweeper = ArtifactSweeper(stores, artifact_settings, settings.artifact_sweep_seconds)

    async def warm_up() -> None:
        sweeper.start()

    async def close() -> None:
        await sweeper.close()
        await downstream.close()
        await stores.close()

    return ChorusServer(
        settings,
        [
            ServiceDefinition(
                SERVICE_NAME,
                lambda s: orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(servicer, s),
            ),
            ServiceDefinition(
                CONVERSATIONS,
                lambda s: orchestrator_pb2_grpc.add_ConversationsServicer_to_server(
                    conversations, s
                ),
            ),
        ],
        warm_up=warm_up,
        close=close,
        drain=servicer.drain,
    )


def main() -> None:
    settings = OrchestratorSettings()
    serve("orchestrator", settings, lambda: build_server(settings))


if __name__ == "__main__":
    main()
