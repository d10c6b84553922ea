"""Real Envoy on loopback for tests (the same code `make run ENVOY=1` uses)."""

from devtools.envoy import EnvoyProcess, running_envoy

__all__ = ["EnvoyProcess", "running_envoy"]
