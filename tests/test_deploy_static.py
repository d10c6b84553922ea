"""Static checks of the deployment files against the service catalog (``services/catalog.py``).

``docker-compose.yml`` and every Kubernetes overlay (rendered by the real ``kubectl kustomize``)
must agree with the catalog on each service's name, image, ports, metrics port, env prefix and
probes, and on the addresses each caller is given: the orchestrator and the gateway must reach
every service they call, directly or through Envoy. The rendered manifests must pass the
Kubernetes schemas (kubernetes-validate), and every environment variable must be a setting some
service (or the Envoy renderer) reads. No Docker daemon or cluster is needed.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from deploy.envoy.render import Endpoint, Options, container_endpoints
from services.catalog import BY_NAME, ENVOY, MODEL_KINDS, SERVICES, Service

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(
    p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists()
)
GPU_TAG_SUFFIX = "-gpu"
"""Images built with the GPU arguments (README) carry the Compose tag plus this suffix."""
ENVOY_VARS = {f"{ENVOY.env_prefix}{f.name.upper()}" for f in dataclasses.fields(Options)}
ENVOY_VARS |= {f"{ENVOY.env_prefix}LOG_LEVEL"}  # read by the container entrypoint
ENVOY_VARS |= {f"{ENVOY.env_prefix}{s.name.upper()}_ADDRESS" for s in SERVICES}
ENVOY_VARS -= {f"{ENVOY.env_prefix}MODE"}  # the command line's, not the environment's


# --- helpers -------------------------------------------------------------------------------------


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def settings_vars(kind: str) -> set[str]:
    """Env var names the settings class the catalog names for ``kind`` reads, nested sections
    included (``CHORUS_TTS_PIPER__SPIN_WAIT``)."""
    module, _, cls = BY_NAME[kind].settings.partition(":")
    klass = getattr(importlib.import_module(module), cls)
    prefix = klass.model_config.get("env_prefix", "")
    return env_names(prefix, klass, klass.model_config.get("env_nested_delimiter") or "")


def env_names(prefix: str, model: type[BaseModel], delimiter: str) -> set[str]:
    """Each field of ``model`` as ``prefix`` + its name in upper case; with a nested-settings
    ``delimiter``, a field that is itself a model also by each of its own fields, at any depth
    (the whole section, as JSON, stays settable by its own name too)."""
    names = set()
    for name, field in model.model_fields.items():
        var = f"{prefix}{name.upper()}"
        names.add(var)
        nested = field.annotation
        if delimiter and isinstance(nested, type) and issubclass(nested, BaseModel):
            names |= env_names(f"{var}{delimiter}", nested, delimiter)
    return names


def owner(var: str) -> Service | None:
    """The catalog service whose prefix ``var`` carries (None: no service's)."""
    return next((s for s in SERVICES if var.startswith(s.env_prefix)), None)


def check_addresses(
    caller: Service,
    env: Mapping[str, str],
    envoy_address: str,
    envoy_routes: Mapping[str, list[Endpoint]],
    where: str,
) -> None:
    """``caller`` reaches every service it calls: through the Envoy at ``envoy_address`` (which
    must route to each of them at its name and catalog port), or at each one's own address."""
    through = env.get(caller.env(caller.envoy_setting)) if caller.envoy_setting else None
    direct = {d.service: env.get(caller.env(d.setting)) for d in caller.dependencies}
    if through is not None:
        assert through == envoy_address, f"{where}: {caller.name} is given Envoy at {through}"
        ignored = sorted(caller.env(d.setting) for d in caller.dependencies if direct[d.service])
        assert not ignored, f"{where}: {caller.name} ignores {ignored} when it goes through Envoy"
        for d in caller.dependencies:
            port = BY_NAME[d.service].port
            assert envoy_routes.get(d.service) == [Endpoint(d.service, port)], (
                f"{where}: Envoy does not route {caller.name}'s calls to {d.service}:{port}"
            )
        return
    for d in caller.dependencies:
        want = f"{d.service}:{BY_NAME[d.service].port}"
        assert direct[d.service] in (want, f"dns:///{want}"), (
            f"{where}: {caller.name} gets no address for {d.service} "
            f"({caller.env(d.setting)} or {caller.env(caller.envoy_setting)})"
        )


def check_env_names(names: set[str], where: str) -> None:
    for var in names:
        if var.startswith(ENVOY.env_prefix):
            assert var in ENVOY_VARS, f"{where}: {var} is no Envoy renderer option"
            continue
        service = owner(var)
        assert service is not None, f"{where}: {var} has no service prefix"
        assert var in settings_vars(service.name), f"{where}: {var} is no setting of {service.name}"


# --- YAML and files ------------------------------------------------------------------------------


def test_every_yaml_parses() -> None:
    files = [ROOT / "docker-compose.yml", *DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]
    assert len(files) >= 10
    for path in files:
        docs = load_all(path)
        assert docs, f"{path} is empty"
        if K8S in path.parents and path.name != "kustomization.yaml":
            for d in docs:
                assert {"apiVersion", "kind", "metadata"} <= set(d), f"{path}: not a manifest"


def test_secrets_are_not_committed() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/secrets.env" in ignored
    example = read_env_file(ROOT / "secrets.env.example")
    assert example and all(v == "" for v in example.values()), "the example must hold no values"
    assert read_env_file(K8S / "base" / "secrets.env.example").keys() == example.keys()
    for var in example:
        service = owner(var)
        assert service is not None, f"{var} has no service prefix"
        names = settings_vars(service.name)
        assert var in names, f"{var} is no setting of {service.name}"
        assert f"{var}_FILE" in names, (
            f"{service.name} should also read {var}_FILE (mounted secrets)"
        )


# --- Dockerfile ----------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile() -> None:
    path = DEPLOY / "docker" / "Dockerfile"
    ins = dockerfile_instructions(path)
    first = next(i for i, (word, _) in enumerate(ins) if word != "ARG")
    assert ins[first][0] == "FROM", "FROM must be the first instruction (after global ARGs)"
    args = dict(rest.split("=", 1) for word, rest in ins[:first] if word == "ARG" and "=" in rest)
    stages = [i for i, (word, _) in enumerate(ins) if word == "FROM"]
    assert len(stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    aliases: set[str] = set()  # earlier stages: ``FROM base AS runtime`` pins nothing new
    for i in stages:
        words = ins[i][1].split()
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
        if len(words) == 3 and words[1].upper() == "AS":
            aliases.add(words[2])
        if image in aliases:
            continue
        assert ":" in image and not image.endswith(":latest"), f"unpinned base image {image}"
        assert "slim" in image, "small CPU base image"
    final = ins[stages[-1] :]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), (
        "the runtime stage must run as non-root"
    )
    assert any(word == "HEALTHCHECK" for word, _ in final)
    assert any(word == "ENTRYPOINT" for word, _ in final)
    for word, rest in ins:
        if word == "COPY" and "--from" not in rest:
            for src in rest.split()[:-1]:
                if src != "." and not src.startswith("--"):
                    assert (ROOT / src).exists(), f"COPY source {src} does not exist"
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1 :], "context narrowed to what the images need"
    assert "!secrets.env" not in ignore


# --- docker compose ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def compose_env(svc: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment as its container sees it: env files, then
    ``environment`` (which wins)."""
    env: dict[str, str] = {}
    for file in svc.get("env_file", []):
        if (ROOT / file["path"]).exists():
            env.update(read_env_file(ROOT / file["path"]))
    return {**env, **{k: str(v) for k, v in svc.get("environment", {}).items()}}


def compose_images(compose: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: svc["image"] for name, svc in compose.items()}


def test_compose_has_the_catalog(compose) -> None:
    assert set(compose) == {*BY_NAME, ENVOY.name}
    for name, svc in compose.items():
        assert svc["image"].rpartition(":")[0] == f"chorus/{name}", f"{name}: {svc['image']}"
        assert not svc["image"].endswith(":latest")
        assert svc["build"]["args"]["SERVICE"] == name, f"{name}: its image runs another service"
        assert svc["healthcheck"]["test"][:2] == ["CMD", "python"]
        assert (ROOT / svc["healthcheck"]["test"][2].replace("/app/", "")).exists()
        for env_file in svc["env_file"]:
            path = ROOT / env_file["path"]
            if env_file.get("required", True):
                assert path.exists(), f"{name}: env file {path} missing"
            else:
                assert path.with_name(path.name + ".example").exists()
        if name != ENVOY.name:
            assert "ports" not in svc, f"{name}: only Envoy is published"


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_compose_service_agrees_with_catalog(compose, service: Service) -> None:
    svc = compose[service.name]
    env = svc["environment"]
    assert env[service.env("host")] == "0.0.0.0"
    assert env[service.env("port")] == str(service.port)
    assert str(service.port) in svc["expose"]
    if service.metrics_port is None:
        assert service.env("metrics_port") not in env
    else:
        assert env[service.env("metrics_port")] == str(service.metrics_port)
        assert str(service.metrics_port) in svc["expose"]
    foreign = [var for var in env if not var.startswith(service.env_prefix)]
    assert not foreign, f"{service.name} is given another service's settings: {foreign}"


def test_compose_envoy(compose) -> None:
    envoy = compose[ENVOY.name]
    env = compose_env(envoy)
    assert env[f"{ENVOY.env_prefix}LISTEN_PORT"] == str(ENVOY.port)
    assert env.get(f"{ENVOY.env_prefix}ADMIN_PORT", str(ENVOY.admin_port)) == str(ENVOY.admin_port)
    (published,) = envoy["ports"]
    assert published.endswith(f":{ENVOY.port}")
    assert published.split(":")[-2].endswith(f"{ENVOY.port}}}") or published.startswith(
        f"{ENVOY.port}:"
    )
    # Envoy's container rendering reaches each service at its compose name and catalog port.
    for name, endpoints in container_endpoints(env).items():
        assert endpoints == [Endpoint(name, BY_NAME[name].port)], name


@pytest.mark.parametrize("caller", [s for s in SERVICES if s.dependencies], ids=lambda s: s.name)
def test_compose_callers_get_every_address(compose, caller: Service) -> None:
    envoy_env = compose_env(compose[ENVOY.name])
    envoy_address = f"{ENVOY.name}:{envoy_env[f'{ENVOY.env_prefix}LISTEN_PORT']}"
    routes = container_endpoints(envoy_env)
    check_addresses(caller, compose_env(compose[caller.name]), envoy_address, routes, "compose")


def test_compose_gpu_variant(compose) -> None:
    gpu = yaml.safe_load((DEPLOY / "docker" / "compose.gpu.yml").read_text())["services"]
    assert set(gpu) <= set(compose)
    for name in ("image", "stt"):
        assert gpu[name]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


def test_compose_env_names_are_settings(compose) -> None:
    names: set[str] = set(read_env_file(DEPLOY / "docker" / "chorus.env"))
    for svc in compose.values():
        names |= set(svc.get("environment", {}))
    gpu = yaml.safe_load((DEPLOY / "docker" / "compose.gpu.yml").read_text())
    for svc in gpu["services"].values():
        names |= set(svc.get("environment", {}))
    check_env_names(names, "compose")


# --- Kubernetes ----------------------------------------------------------------------------------


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize folder``: the manifests as ``kubectl apply -k`` would send them."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the overlays are rendered by `kubectl kustomize`")
    result = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {folder}:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, kustomize(K8S / "overlays" / request.param)


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
        return doc["spec"]["template"]["spec"]
    return None


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The one container of Deployment ``name`` (each Chorus pod runs one)."""
    (container,) = _pod_spec(_by_kind(docs, "Deployment")[name])["containers"]
    return container


def _env(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    """Deployment ``name``'s environment as its container sees it: ConfigMaps, then ``env``."""
    configmaps = _by_kind(docs, "ConfigMap")
    container = _container(docs, name)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]]["data"])
    return {**env, **{e["name"]: e.get("value") for e in container.get("env", [])}}


def _envoy_address(docs: list[dict[str, Any]]) -> str:
    """Where pods reach Envoy: its Service's name and the port that leads to Envoy's listener."""
    listen = int(_env(docs, ENVOY.name)[f"{ENVOY.env_prefix}LISTEN_PORT"])
    ports = {p["name"]: p["containerPort"] for p in _container(docs, ENVOY.name)["ports"]}
    service = _by_kind(docs, "Service")[ENVOY.name]
    (port,) = [
        p["port"]
        for p in service["spec"]["ports"]
        if p.get("targetPort", p["port"]) in (listen, *[n for n, v in ports.items() if v == listen])
    ]
    return f"{ENVOY.name}:{port}"


def test_overlay_renders(rendered) -> None:
    _, docs = rendered
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(set(names)) == len(names), "duplicate resources"
    for name in [*BY_NAME, ENVOY.name]:
        assert ("Deployment", name) in names and ("Service", name) in names, name
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "chorus"


def test_kubernetes_validate(rendered) -> None:
    import kubernetes_validate

    _, docs = rendered
    version = kubernetes_validate.latest_version()
    for d in docs:
        kubernetes_validate.validate(d, version, strict=True)


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_k8s_service_agrees_with_catalog(rendered, service: Service) -> None:
    overlay, docs = rendered
    where = f"{overlay}/{service.name}"
    container = _container(docs, service.name)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[service.protocol] == service.port, where
    explicit = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert explicit[service.env("host")] == "0.0.0.0", where
    assert explicit[service.env("port")] == str(service.port), where
    foreign = [var for var in explicit if not var.startswith(service.env_prefix)]
    assert not foreign, f"{where} is given another service's settings: {foreign}"
    svc_ports = {p["name"]: p for p in _by_kind(docs, "Service")[service.name]["spec"]["ports"]}
    assert svc_ports[service.protocol]["port"] == service.port, where
    template = _by_kind(docs, "Deployment")[service.name]["spec"]["template"]
    if service.metrics_port is None:
        assert "metrics" not in ports and service.env("metrics_port") not in explicit, where
    else:
        assert ports["metrics"] == service.metrics_port, where
        assert explicit[service.env("metrics_port")] == str(service.metrics_port), where
        assert svc_ports["metrics"]["port"] == service.metrics_port, where
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(service.metrics_port), where
    ready = container["readinessProbe"]
    if service.protocol == "grpc":
        # Ready means this service's model is loaded: the same check Envoy makes.
        assert ready["grpc"] == {"port": service.port, "service": service.grpc_service}, where
    else:
        assert ready["httpGet"]["path"] == service.ready_path, where


@pytest.mark.parametrize("caller", [s for s in SERVICES if s.dependencies], ids=lambda s: s.name)
def test_k8s_callers_get_every_address(rendered, caller: Service) -> None:
    overlay, docs = rendered
    routes = container_endpoints(_env(docs, ENVOY.name))
    check_addresses(caller, _env(docs, caller.name), _envoy_address(docs), routes, overlay)


def test_k8s_envoy_reaches_every_replica(rendered) -> None:
    _, docs = rendered
    env = _env(docs, ENVOY.name)
    assert int(env[f"{ENVOY.env_prefix}LISTEN_PORT"]) == ENVOY.port
    assert _envoy_address(docs) == f"{ENVOY.name}:{ENVOY.port}"
    services = _by_kind(docs, "Service")
    for name, endpoints in container_endpoints(env).items():
        assert endpoints == [Endpoint(name, BY_NAME[name].port)], name
        spec = services[name]["spec"]
        assert spec.get("clusterIP") == "None", f"{name}: headless, so Envoy sees every pod"
    assert container_endpoints({}) == container_endpoints(env)


def test_k8s_images_are_the_compose_images(rendered, compose) -> None:
    """Each Deployment runs the image Compose builds for the same service; a GPU overlay may use
    that image's GPU build (same repository, tag plus ``-gpu``) on the pods it gives a GPU."""
    overlay, docs = rendered
    images = compose_images(compose)
    for name, deployment in _by_kind(docs, "Deployment").items():
        (container,) = _pod_spec(deployment)["containers"]
        gpu = container["resources"]["limits"].get("nvidia.com/gpu")
        allowed = {images[name]} | ({images[name] + GPU_TAG_SUFFIX} if gpu else set())
        assert container["image"] in allowed, f"{overlay}/{name}: {container['image']}"


def test_one_autoscaler_and_budget_per_model_kind(rendered) -> None:
    overlay, docs = rendered
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    pdbs = _by_kind(docs, "PodDisruptionBudget")
    deployments = _by_kind(docs, "Deployment")
    for kind in MODEL_KINDS:
        mine = [h for h in hpas if h["spec"]["scaleTargetRef"]["name"] == kind]
        assert len(mine) == 1, f"{overlay}: {len(mine)} HorizontalPodAutoscalers for {kind}"
        (hpa,) = mine
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": kind,
        }
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        labels = deployments[kind]["spec"]["template"]["metadata"]["labels"]
        assert pdbs[kind]["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_services_select_deployments_and_ports_exist(rendered) -> None:
    _, docs = rendered
    deployments = _by_kind(docs, "Deployment")
    for name, svc in _by_kind(docs, "Service").items():
        selector = svc["spec"]["selector"]
        matched = [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matched, f"Service {name} selects no Deployment"
        ports = {
            p["name"]: p["containerPort"]
            for d in matched
            for c in _pod_spec(d)["containers"]
            for p in c["ports"]
        }
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in ports or target in ports.values(), (
                f"Service {name}: no container port {target}"
            )
    for d in deployments.values():
        assert (
            d["spec"]["selector"]["matchLabels"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        )


def test_probes(rendered) -> None:
    _, docs = rendered
    for name, d in _by_kind(docs, "Deployment").items():
        for c in _pod_spec(d)["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in c, f"{name}: no {probe}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                spec = c.get(probe)
                if not spec:
                    continue
                if "grpc" in spec:
                    assert spec["grpc"]["port"] in ports.values(), f"{name}.{probe}: port"
                else:
                    port = spec["httpGet"]["port"]
                    assert port in ports or port in ports.values(), f"{name}.{probe}: port {port}"
            if name in BY_NAME and BY_NAME[name].protocol == "grpc":
                assert "grpc" in c["readinessProbe"], f"{name}: native gRPC probes"


def test_resources_and_security(rendered) -> None:
    overlay, docs = rendered
    for name, d in _by_kind(docs, "Deployment").items():
        pod = _pod_spec(d)
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), name
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in pod.get("volumes", [])}
            gpu = c["resources"]["limits"].get("nvidia.com/gpu")
            if overlay == "gpu" and name == "image":
                assert gpu == "1" and pod["nodeSelector"], "the image service needs a GPU node"
                assert c["image"].endswith(GPU_TAG_SUFFIX)
            if overlay == "cpu":
                assert gpu is None and "nodeSelector" not in pod


def test_k8s_env_names_are_settings(rendered) -> None:
    _, docs = rendered
    configmaps = _by_kind(docs, "ConfigMap")
    names: set[str] = set()
    for name, d in _by_kind(docs, "Deployment").items():
        for c in _pod_spec(d)["containers"]:
            names |= {e["name"] for e in c.get("env", [])}
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    ref = source["configMapRef"]["name"]
                    assert ref in configmaps, f"{name}: ConfigMap {ref} missing"
                    names |= set(configmaps[ref]["data"])
                else:
                    assert source["secretRef"].get("optional") is True, (
                        "the Secret is created by the operator"
                    )
    check_env_names(names, "kubernetes")


def test_kubeconform_if_available(rendered, tmp_path: Path) -> None:
    binary = shutil.which("kubeconform")
    if binary is None:
        pytest.skip("kubeconform not installed (not on PyPI or Debian)")
    _, docs = rendered
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    result = subprocess.run(
        [binary, "-strict", "-summary", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
