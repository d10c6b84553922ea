"""Run the orchestrator: ``python -m services.orchestrator`` (CHORUS_ORCH_* variables)."""

from chorus.v1 import orchestrator_pb2, orchestrator_pb2_grpc

from services.common.server import ChorusServer, ServiceDefinition, serve
from services.orchestrator.downstream import Downstream
from services.orchestrator.servicer import OrchestratorServicer
from services.orchestrator.settings import OrchestratorSettings

SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"].full_name


def build_server(settings: OrchestratorSettings) -> ChorusServer:
    downstream = Downstream.connect(settings)
    servicer = OrchestratorServicer(settings, downstream)
    return ChorusServer(
        settings,
        [
            ServiceDefinition(
                SERVICE_NAME,
                lambda s: orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(servicer, s),
            )
        ],
        close=downstream.close,
    )


def main() -> None:
    settings = OrchestratorSettings()
    serve("orchestrator", settings, lambda: build_server(settings))


if __name__ == "__main__":
    main()
