"""Container entrypoint: start the service named by CHORUS_SERVICE (the image's build arg).

Model services and the orchestrator run ``python -m services.<name>``, the gateway ``python -m
gateway``; Envoy renders deploy/envoy/envoy.yaml.j2 for containers (CHORUS_ENVOY_* variables)
and then becomes the Envoy process, so signals reach it directly.
"""

from __future__ import annotations

import os
import sys

MODULES = {
    "stt": "services.stt",
    "tts": "services.tts",
    "llm": "services.llm",
    "image": "services.image",
    "orchestrator": "services.orchestrator",
    "gateway": "gateway",
}
ENVOY_CONFIG = "/tmp/envoy.yaml"


def main() -> None:
    service = os.environ.get("CHORUS_SERVICE", "")
    if service == "envoy":
        from deploy.envoy.render import envoy_binary
        from deploy.envoy.render import main as render

        if render(["--mode", "container", "-o", ENVOY_CONFIG]) != 0:
            sys.exit(1)
        binary = str(envoy_binary())
        args = [
            binary,
            "-c",
            ENVOY_CONFIG,
            "--log-level",
            os.environ.get("CHORUS_ENVOY_LOG_LEVEL", "info"),
        ]
        os.execv(binary, args + sys.argv[1:])
    if service not in MODULES:
        sys.exit(f"CHORUS_SERVICE must be one of {sorted([*MODULES, 'envoy'])}, not {service!r}")
    os.execv(sys.executable, [sys.executable, "-m", MODULES[service], *sys.argv[1:]])


if __name__ == "__main__":
    main()
