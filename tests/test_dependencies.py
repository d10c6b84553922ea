"""Dependencies from one source: pyproject.toml's extras, one lock made by uv with hashes, and
one installer (scripts/install_deps.py) for the local environment and every image."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from services.catalog import SERVICES

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCK_TEXT = (ROOT / "requirements" / "lock.txt").read_text()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    return {
        canonical(m.group(1)): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+)", LOCK_TEXT, re.MULTILINE)
    }


def declared() -> list[tuple[str, str]]:
    """(extra or "base", requirement) for every direct dependency."""
    out = [("base", r) for r in PYPROJECT["dependencies"]]
    for extra, requirements in PYPROJECT["optional-dependencies"].items():
        out += [(extra, r) for r in requirements]
    return out


def test_every_image_has_its_extra():
    extras = set(PYPROJECT["optional-dependencies"])
    for name in [*(s.name for s in SERVICES), "envoy"]:
        assert name in extras, f"the {name} image installs --extra {name}; pyproject lacks it"


def test_every_direct_dependency_is_pinned_and_locked():
    pins = lock_pins()
    for extra, requirement in declared():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]+\])?==(\S+)", requirement)
        assert match, f"{extra}: {requirement!r} is not pinned with =="
        name, version = canonical(match.group(1)), match.group(3)
        assert name in pins, f"{extra}: {name} is not in requirements/lock.txt (make lock)"
        # torch: the lock holds the CPU build's local version (2.13.0+cpu) of the pinned release.
        assert pins[name].split("+")[0] == version, (
            f"{name}: {version} declared, {pins[name]} locked"
        )


def test_the_lock_has_a_hash_for_every_package_and_names_no_host():
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK_TEXT.split("\n", 2)[2])
    assert len(blocks) == len(lock_pins()) > 100
    for block in blocks:
        assert "--hash=sha256:" in block, block.splitlines()[0]
    assert "://" not in LOCK_TEXT


def test_the_environment_holds_exactly_the_locked_versions():
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    for name, version in lock_pins().items():
        assert installed.get(name) == version, (
            f"{name}: locked {version}, installed {installed.get(name)}"
        )


def test_torch_is_the_cpu_build():
    import torch

    assert torch.__version__ == "2.13.0+cpu" and torch.version.cuda is None


def test_no_undeclared_import():
    """Every third-party package a service imports is a declared dependency of its image (today's
    case: httpx2, imported by the TTS API backend, arrived only through openai)."""
    extras = PYPROJECT["optional-dependencies"]
    for service, extra in (("tts", "tts"), ("stt", "stt"), ("llm", "llm"), ("image", "image")):
        names = {
            canonical(re.split(r"[\[=]", r)[0])
            for r in [*PYPROJECT["dependencies"], *extras[extra]]
        }
        for source in (ROOT / "services" / service / "backends").glob("*.py"):
            for module in re.findall(r"^import (httpx2|openai)\b", source.read_text(), re.M):
                assert canonical(module) in names, (
                    f"{source.name} imports {module}; {extra} lacks it"
                )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("requirement", "complaint"),
    [("six==1.16.0", "six"), ("tabulate==0.9.0", "tabulate")],
    ids=["conflicts-with-the-lock", "not-in-the-lock"],
)
def test_install_fails_on_a_conflict(tmp_path: Path, requirement: str, complaint: str):
    """An extra that disagrees with the lock, or names a package it does not pin (no hash),
    fails the install instead of quietly resolving something else."""
    (tmp_path / "requirements").mkdir()
    (tmp_path / "scripts").mkdir()
    for name in ("requirements/lock.txt", "requirements/overrides.txt", "scripts/install_deps.py"):
        shutil.copyfile(ROOT / name, tmp_path / name)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "orchestrator = [\n" in pyproject
    pyproject = pyproject.replace(
        "orchestrator = [\n", f'orchestrator = [\n    "{requirement}",\n', 1
    )
    (tmp_path / "pyproject.toml").write_text(pyproject)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # The environment's own uv serves (ensure_uv finds it at the locked version).
    shutil.copy2(Path(sys.executable).parent / "uv", venv / "bin" / "uv")
    result = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "scripts" / "install_deps.py"),
            str(venv),
            "--extra",
            "orchestrator",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr[-2000:]
