"""Install Chorus's dependencies into a virtual environment from the one lock file.

Every environment is installed by this script, so each holds exactly what the lock says:

* the local one (``make env`` → scripts/bootstrap.sh, every extra: all services and the tests);
* each container image (deploy/docker/Dockerfile, the extras its service needs).

``pyproject.toml`` names the direct dependencies (the base list and one extra per service);
``requirements/lock.txt`` (made by ``make lock``) pins every package with its hashes;
``requirements/overrides.txt`` lists the two deliberate departures from what packages declare
(torch stays 2.13.0 CPU, openai-whisper's CUDA-only triton is dropped). uv resolves the
requested extras against the lock as constraints with ``--require-hashes``: a package the lock
does not pin, a hash that does not match or a conflict fails the install.

Two packages are not plain downloads:

* llama-cpp-python ships only an sdist. It is compiled once per machine (``-DGGML_NATIVE=OFF``:
  the native build's AMX kernels crash at the first decode on some CPUs) from the locked sdist,
  whose hash pip checks, into the wheel cache; later installs use that wheel.
* torch is the CPU build, found through ``--find-links`` (``/opt/wheels`` on these machines, or
  a folder the image build downloaded it into); its hash is in the lock like any other.

Usage::

    python3 scripts/install_deps.py VENV [--extra NAME ...|--all-extras] [--find-links DIR ...]
    python3 scripts/install_deps.py --build-wheels DIR [--torch-index-url URL]

Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements" / "lock.txt"
OVERRIDES = ROOT / "requirements" / "overrides.txt"
CACHE = Path(os.environ.get("CHORUS_CACHE", Path.home() / ".cache" / "chorus"))
LLAMA = "llama-cpp-python"
LLAMA_CMAKE_ARGS = "-DGGML_NATIVE=OFF"
# torchaudio's native libraries link CUDA and cannot load against CPU torch; without them it runs
# its pure-Python paths, which is all Coqui inference uses. Only `import TTS` needs torchaudio.
# The system's CA bundle, for pip and uv alike: behind a TLS-inspecting proxy (as in the image
# builds here) only the system store knows its issuer, and an old pip ignores that store.
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TORCHAUDIO_NATIVE = ("_torchaudio.abi3.so", "libtorchaudio.abi3.so", "torchaudio_prefixctc.abi3.so")


def log(message: str) -> None:
    print(f"[install_deps] {message}", flush=True)


def run(args: list[str], **kwargs: object) -> None:
    """Run a step; a failure ends the install with the step's own error above (no traceback)."""
    if subprocess.run(args, check=False, **kwargs).returncode != 0:  # type: ignore[call-overload]
        raise SystemExit(f"[install_deps] failed: {' '.join(args[:3])} ... (see above)")


def lock_entry(name: str) -> str:
    """The lock's requirement block for one package (its pin and every hash), as pip reads it."""
    lines = LOCK.read_text().splitlines()
    wanted = name.lower().replace("_", "-")
    for i, line in enumerate(lines):
        if line.split("==")[0].lower().replace("_", "-") == wanted and "==" in line:
            block = [line]
            for more in lines[i + 1 :]:
                if not more.startswith("    --hash"):
                    break
                block.append(more)
            return "\n".join(block).rstrip("\\ \n") + "\n"
    raise SystemExit(f"{name} is not pinned in {LOCK}; run `make lock`")


def locked_version(name: str) -> str:
    return lock_entry(name).split("==", 1)[1].split()[0]


def extras_closure_needs(extras: list[str], package: str) -> bool:
    """Whether a requested extra names ``package`` directly (llama-cpp-python, torch)."""
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    wanted = package.lower()
    return any(
        req.lower().startswith(wanted + "[") or req.lower().startswith(wanted + "=")
        for extra in extras
        for req in declared[extra]
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def llama_wheel(python: str, wheel_dirs: list[Path], cache: Path) -> Path:
    """The llama-cpp-python wheel of the locked version: found in a wheel folder, or built once
    from the locked (hash-checked) sdist into ``cache``."""
    version = locked_version(LLAMA)
    pattern = f"llama_cpp_python-{version}-*.whl"
    for folder in wheel_dirs:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    target = cache / f"llama-cpp-python-{version}-portable"
    found = sorted(target.glob(pattern))
    if found:
        return found[0]
    log(f"building {LLAMA}=={version} with {LLAMA_CMAKE_ARGS} (several minutes, once per machine)")
    with tempfile.TemporaryDirectory(dir=cache.parent if cache.parent.exists() else None) as tmp:
        requirement = Path(tmp) / "llama.txt"
        requirement.write_text(lock_entry(LLAMA))
        out = Path(tmp) / "wheel"
        env = {**os.environ, "CMAKE_ARGS": LLAMA_CMAKE_ARGS, "FORCE_CMAKE": "1"}
        # pip's cache stays off: a wheel built natively elsewhere must never be picked up from it.
        run(
            [
                python,
                "-m",
                "pip",
                "wheel",
                "--disable-pip-version-check",
                "--no-cache-dir",
                "--no-deps",
                "--require-hashes",
                "-r",
                str(requirement),
                "-w",
                str(out),
            ],
            env=env,
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(out, target)
    return sorted(target.glob(pattern))[0]


def ensure_uv(python: str) -> str:
    """uv, at the locked version, installed into the environment by pip with hash checking."""
    uv = Path(python).parent / "uv"
    wanted = locked_version("uv")
    if uv.exists():
        current = subprocess.run([str(uv), "--version"], capture_output=True, text=True).stdout
        if current.split()[1:2] == [wanted]:
            return str(uv)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirement:
        requirement.write(lock_entry("uv"))
        requirement.flush()
        run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--require-hashes",
                "-r",
                requirement.name,
            ]
        )
    return str(uv)


def install(venv: Path, extras: list[str], find_links: list[Path], cache: Path) -> None:
    if not (venv / "bin" / "python").exists():
        run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    uv = ensure_uv(python)
    args = [uv, "pip", "install", "--python", python, "-r", str(PYPROJECT), "-c", str(LOCK)]
    args += ["--override", str(OVERRIDES), "--require-hashes"]
    for extra in extras:
        args += ["--extra", extra]
    for folder in find_links:
        args += ["--find-links", str(folder)]
    with tempfile.TemporaryDirectory() as tmp:
        if extras_closure_needs(extras, LLAMA):
            wheel = llama_wheel(python, find_links, cache / "wheels")
            # Pinned by the wheel's own hash: built here from the sdist the lock's hash checked.
            direct = Path(tmp) / "llama.txt"
            direct.write_text(
                f"{LLAMA} @ {wheel.resolve().as_uri()} --hash=sha256:{sha256(wheel)}\n"
            )
            args += ["-r", str(direct)]
        log(f"installing {'base' if not extras else ', '.join(extras)} into {venv}")
        env = {**os.environ, "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(cache / "uv"))}
        run(args, env=env)
    if "tts-coqui" in extras:
        strip_torchaudio_native(python)


def strip_torchaudio_native(python: str) -> None:
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for name in TORCHAUDIO_NATIVE:
        (Path(purelib) / "torchaudio" / "lib" / name).unlink(missing_ok=True)
    run([python, "-c", "import torch, torchaudio, TTS; from TTS.api import TTS as _"])


def build_wheels(out: Path, torch_index_url: str | None, cache: Path) -> None:
    """The wheels an image build needs that are not plain downloads (for a machine without a
    wheel cache): llama-cpp-python compiled, torch from a PyTorch index."""
    out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    wheel = llama_wheel(python, [out], cache)
    if wheel.parent != out:
        shutil.copy2(wheel, out / wheel.name)
    if torch_index_url:
        torch = f"torch=={locked_version('torch')}"
        run(
            [
                python,
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--no-deps",
                "--index-url",
                torch_index_url,
                "-d",
                str(out),
                torch,
            ]
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("venv", nargs="?", type=Path, help="the environment to install into")
    parser.add_argument("--extra", action="append", default=[], help="an extra of pyproject.toml")
    parser.add_argument("--all-extras", action="store_true")
    parser.add_argument(
        "--find-links",
        action="append",
        type=Path,
        default=[],
        help="a folder of wheels (the CPU torch, a built llama-cpp-python)",
    )
    parser.add_argument(
        "--build-wheels",
        type=Path,
        metavar="DIR",
        help="only build/download the special wheels into DIR",
    )
    parser.add_argument("--torch-index-url", help="with --build-wheels: where torch comes from")
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args(argv)
    if SYSTEM_CA_BUNDLE.exists():
        for variable in ("SSL_CERT_FILE", "PIP_CERT"):
            os.environ.setdefault(variable, str(SYSTEM_CA_BUNDLE))
    if args.build_wheels:
        build_wheels(args.build_wheels, args.torch_index_url, args.cache)
        return 0
    if args.venv is None:
        parser.error("the environment to install into is required")
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    requested = [e for x in args.extra for e in x.split(",") if e]
    extras = list(declared) if args.all_extras else requested
    unknown = sorted(set(extras) - set(declared))
    if unknown:
        parser.error(f"unknown extras {unknown}; pyproject.toml has {sorted(declared)}")
    install(args.venv, extras, [p for p in args.find_links if p.is_dir()], args.cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
