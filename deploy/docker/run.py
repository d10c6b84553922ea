"""Container entrypoint: start the service named by CHORUS_SERVICE (the image's build arg).

Every service of the catalog (``services/catalog.py``) runs ``python -m <its module>``; Envoy
renders deploy/envoy/envoy.yaml.j2 for containers (CHORUS_ENVOY_* variables) and then becomes
the Envoy process, so signals reach it directly.
"""

from __future__ import annotations

import os
import sys

from services.catalog import BY_NAME, ENVOY

ENVOY_CONFIG = "/tmp/envoy.yaml"


def main() -> None:
    service = os.environ.get("CHORUS_SERVICE", "")
    if service == ENVOY.name:
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
            os.environ.get(f"{ENVOY.env_prefix}LOG_LEVEL", "info"),
        ]
        os.execv(binary, args + sys.argv[1:])
    if service not in BY_NAME:
        known = sorted([*BY_NAME, ENVOY.name])
        sys.exit(f"CHORUS_SERVICE must be one of {known}, not {service!r}")
    module = BY_NAME[service].module
    os.execv(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]])


if __name__ == "__main__":
    main()
