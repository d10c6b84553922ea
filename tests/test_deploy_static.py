"""Static checks of the deployment files: compose, Dockerfile, Kubernetes (kustomize) and Envoy.

No Docker or Kubernetes here, so the manifests are checked as data: they parse, the kustomize
overlays render (a small pure-Python kustomize: resources, namespace, images, configMapGenerator
and strategic-merge patches, the features these overlays use), and names, ports, probes and
environment variables agree across compose, Kubernetes, Envoy and the services' settings classes.
"""

from __future__ import annotations

import copy
import importlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.envoy.render import BY_NAME, UPSTREAMS, Endpoint, container_endpoints

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ["cpu", "gpu"]
MODEL_KINDS = ["stt", "tts", "llm", "image"]
SETTINGS = {
    "stt": ("services.stt.settings", "SttSettings"),
    "tts": ("services.tts.settings", "TtsSettings"),
    "llm": ("services.llm.settings", "LlmSettings"),
    "image": ("services.image.settings", "ImageSettings"),
    "orchestrator": ("services.orchestrator.settings", "OrchestratorSettings"),
    "gateway": ("gateway.settings", "GatewaySettings"),
}
ENVOY_VARS = {
    f"CHORUS_ENVOY_{n.upper()}"
    for n in (
        "listen_port",
        "admin_port",
        "rate_limit_rps",
        "rate_limit_burst",
        "health_interval_s",
        "dns_refresh_s",
        "log_level",
    )
}
ENVOY_VARS |= {f"CHORUS_ENVOY_{u.name.upper()}_ADDRESS" for u in UPSTREAMS}
# Packages the deploy requirement files may name before they reach requirements/lock.txt.
PENDING_PINS = {"flask": "the gateway (not built yet) brings Flask"}


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


def settings_fields(kind: str) -> dict[str, set[str]] | None:
    """Env var names a service's settings class reads, or None when the service is not built yet."""
    module, cls = SETTINGS[kind]
    try:
        klass = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return None
    prefix = klass.model_config.get("env_prefix", "")
    return {"prefix": {prefix}, "vars": {f"{prefix}{name.upper()}" for name in klass.model_fields}}


def strategic_merge(base: Any, patch: Any) -> Any:
    """Kubernetes strategic merge for what the overlays use: maps merge, lists of named maps
    (containers, env, ports, volumes) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        out = [copy.deepcopy(x) for x in base]
        index = {x["name"]: i for i, x in enumerate(out)}
        for item in patch:
            if item["name"] in index:
                out[index[item["name"]]] = strategic_merge(out[index[item["name"]]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """Render a kustomization folder (the subset of kustomize these manifests use)."""
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    allowed = {
        "apiVersion",
        "kind",
        "namespace",
        "labels",
        "resources",
        "configMapGenerator",
        "images",
        "patches",
    }
    assert set(k) <= allowed, (
        f"{folder}: kustomize features this check does not render: {set(k) - allowed}"
    )
    docs: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        path = (folder / res).resolve()
        assert path.exists(), f"{folder}/kustomization.yaml: missing resource {res}"
        docs += kustomize(path) if path.is_dir() else load_all(path)
    for gen in k.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for env in gen.get("envs", []):
            assert (folder / env).exists(), f"{folder}: missing configMapGenerator env file {env}"
            data.update(read_env_file(folder / env))
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": gen["name"]},
                "data": data,
            }
        )
    for patch in k.get("patches", []):
        path = folder / patch["path"]
        assert path.exists(), f"{folder}: missing patch {patch['path']}"
        for p in load_all(path):
            targets = [
                d
                for d in docs
                if (d["kind"], d["metadata"]["name"]) == (p["kind"], p["metadata"]["name"])
            ]
            assert len(targets) == 1, (
                f"{path}: patch targets no single {p['kind']}/{p['metadata']['name']}"
            )
            docs[docs.index(targets[0])] = strategic_merge(targets[0], p)
    for image in k.get("images", []):
        hits = 0
        for d in docs:
            for c in _pod_spec(d).get("containers", []) if _pod_spec(d) else []:
                name, _, _ = c["image"].partition(":")
                if name == image["name"]:
                    c["image"] = f"{name}:{image['newTag']}"
                    hits += 1
        assert hits, f"{folder}: images entry {image['name']} matches no container"
    if "namespace" in k:
        for d in docs:
            if d["kind"] != "Namespace":
                d["metadata"]["namespace"] = k["namespace"]
    for group in k.get("labels", []):
        for d in docs:
            d["metadata"].setdefault("labels", {}).update(group["pairs"])
    return docs


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
        return doc["spec"]["template"]["spec"]
    return None


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, kustomize(K8S / "overlays" / request.param)


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
        kind = next(k for k, u in BY_NAME.items() if var.startswith(u.env_prefix))
        fields = settings_fields(kind)
        if fields is not None:
            assert var in fields["vars"], f"{var} is no setting of {kind}"
            assert f"{var}_FILE" in fields["vars"], (
                f"{kind} should also read {var}_FILE (mounted secrets)"
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
    for i in stages:
        image = ins[i][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
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


def test_image_requirements_are_pinned() -> None:
    lock = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    folder = DEPLOY / "docker" / "requirements"
    for kind in [*BY_NAME, "envoy"]:
        for name in (f"{kind}.txt", f"{kind}-weights.txt"):
            assert (folder / name).exists(), f"missing {name} (SERVICE={kind} builds need it)"
    for path in folder.glob("*.txt"):
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if not line:
                continue
            if line.startswith("-r "):
                assert (folder / line[3:]).exists()
                continue
            name = re.split(r"[<>=\[ ]", line)[0].lower().replace("_", "-")
            if name in PENDING_PINS and name not in lock:
                continue
            assert name in lock, f"{path.name}: {name} is not pinned in requirements/lock.txt"


# --- docker compose ------------------------------------------------------------------------------


def test_compose() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {*BY_NAME, "envoy"}
    for name, svc in services.items():
        build = svc["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).exists()
        assert build["args"]["SERVICE"] == name
        assert ":" in svc["image"] and not svc["image"].endswith(":latest")
        assert svc["healthcheck"]["test"][:2] == ["CMD", "python"]
        assert (ROOT / svc["healthcheck"]["test"][2].replace("/app/", "")).exists()
        for env_file in svc["env_file"]:
            path = ROOT / env_file["path"]
            if env_file.get("required", True):
                assert path.exists(), f"{name}: env file {path} missing"
            else:
                assert path.with_name(path.name + ".example").exists()
        env = {**svc.get("environment", {})}
        for file in svc["env_file"]:
            if (ROOT / file["path"]).exists():
                env.update(read_env_file(ROOT / file["path"]))
        if name == "envoy":
            (published,) = svc["ports"]
            assert published.endswith(f":{env['CHORUS_ENVOY_LISTEN_PORT']}")
            assert published.split(":")[-2].endswith("8000}") or published.startswith("8000:")
            continue
        u = BY_NAME[name]
        assert env[f"{u.env_prefix}PORT"] == str(u.port)
        assert env[f"{u.env_prefix}HOST"] == "0.0.0.0"
        assert str(u.port) in svc["expose"]
        if u.metrics_port:
            assert env[f"{u.env_prefix}METRICS_PORT"] == str(u.metrics_port)
        assert "ports" not in svc, f"{name}: only Envoy is published"
    envoy_port = services["envoy"]["environment"]["CHORUS_ENVOY_LISTEN_PORT"]
    assert (
        services["orchestrator"]["environment"]["CHORUS_ORCH_ENVOY_ADDRESS"]
        == f"envoy:{envoy_port}"
    )
    assert (
        services["gateway"]["environment"]["CHORUS_GATEWAY_ORCHESTRATOR_ADDRESS"]
        == f"envoy:{envoy_port}"
    )
    gpu = yaml.safe_load((DEPLOY / "docker" / "compose.gpu.yml").read_text())["services"]
    assert set(gpu) <= set(services)
    for name in ("image", "stt"):
        assert gpu[name]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


def test_compose_env_names_are_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    names: set[str] = set(read_env_file(DEPLOY / "docker" / "chorus.env"))
    for svc in compose["services"].values():
        names |= set(svc.get("environment", {}))
    gpu = yaml.safe_load((DEPLOY / "docker" / "compose.gpu.yml").read_text())
    for svc in gpu["services"].values():
        names |= set(svc.get("environment", {}))
    _check_env_names(names, "compose")


def _check_env_names(names: set[str], where: str) -> None:
    for var in names:
        if var.startswith("CHORUS_ENVOY_"):
            assert var in ENVOY_VARS, f"{where}: {var} is no Envoy renderer option"
            continue
        kinds = [k for k, u in BY_NAME.items() if var.startswith(u.env_prefix)]
        assert kinds, f"{where}: {var} has no service prefix"
        fields = settings_fields(kinds[0])
        if fields is not None:
            assert var in fields["vars"], f"{where}: {var} is not a setting of {kinds[0]}"


# --- Kubernetes ----------------------------------------------------------------------------------


def test_overlay_renders(rendered) -> None:
    overlay, docs = rendered
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert len(names) == len(docs), "duplicate resources"
    for kind in [*MODEL_KINDS, "orchestrator", "gateway", "envoy"]:
        assert ("Deployment", kind) in names and ("Service", kind) in names
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "chorus"


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
                    assert spec["grpc"]["port"] in ports.values(), (
                        f"{name}.{probe}: port not exposed"
                    )
                    if probe == "readinessProbe":
                        # Ready means this service's model is loaded: the same check Envoy makes.
                        assert spec["grpc"]["service"] == BY_NAME[name].service
                        assert spec["grpc"]["port"] == BY_NAME[name].port
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
            assert not c["image"].endswith(":latest") and ":" in c["image"]
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in pod.get("volumes", [])}
            gpu = c["resources"]["limits"].get("nvidia.com/gpu")
            if overlay == "gpu" and name == "image":
                assert gpu == "1" and pod["nodeSelector"], "the image service needs a GPU node"
                assert c["image"].endswith("-gpu")
            if overlay == "cpu":
                assert gpu is None and "nodeSelector" not in pod


def test_every_model_service_scales_and_has_a_budget(rendered) -> None:
    _, docs = rendered
    hpas, pdbs = _by_kind(docs, "HorizontalPodAutoscaler"), _by_kind(docs, "PodDisruptionBudget")
    deployments = _by_kind(docs, "Deployment")
    for kind in MODEL_KINDS:
        hpa = hpas[kind]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": kind,
        }
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        labels = deployments[kind]["spec"]["template"]["metadata"]["labels"]
        assert pdbs[kind]["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_k8s_env_agrees_with_settings_and_envoy(rendered) -> None:
    _, docs = rendered
    configmaps = _by_kind(docs, "ConfigMap")
    services = _by_kind(docs, "Service")
    names: set[str] = set()
    for name, d in _by_kind(docs, "Deployment").items():
        for c in _pod_spec(d)["containers"]:
            names |= {e["name"] for e in c.get("env", [])}
            for source in c.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                if "configMapRef" in source:
                    assert ref["name"] in configmaps, f"{name}: ConfigMap {ref['name']} missing"
                    names |= set(configmaps[ref["name"]]["data"])
                else:
                    assert ref.get("optional") is True, "the Secret is created by the operator"
            if name in BY_NAME:
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                u = BY_NAME[name]
                assert env[f"{u.env_prefix}PORT"] == str(u.port)
    _check_env_names(names, "kubernetes")
    # Envoy's container rendering reaches every kind at its Service's name and port.
    envoy_env = configmaps["envoy-config"]["data"]
    for kind, endpoints in container_endpoints(envoy_env).items():
        (endpoint,) = endpoints
        assert endpoint == Endpoint(kind, BY_NAME[kind].port)
        svc = services[kind]
        assert svc["spec"].get("clusterIP") == "None", f"{kind}: headless, so Envoy sees every pod"
        assert BY_NAME[kind].port in {p["port"] for p in svc["spec"]["ports"]}
    assert container_endpoints({}) == container_endpoints(envoy_env)


def test_kubernetes_validate_offline_schemas(rendered, tmp_path: Path) -> None:
    validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate not installed"
    )
    _, docs = rendered
    for d in docs:
        validate.validate(d, validate.latest_version(), strict=True)


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
