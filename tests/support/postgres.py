"""A private PostgreSQL cluster for tests: ``initdb`` in a temporary folder and ``postgres`` on
127.0.0.1 at a free port, stopped by its pid at the end.

PostgreSQL refuses to run as root, so as root (CI, these machines) both run as ``nobody``,
which owns the folder; the process is started with ``subprocess.Popen(user=...)`` (no ``su``
in between), so the pid kept is the postmaster's own. Durability is off (``fsync``): the
cluster is thrown away.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from devtools.processes import free_port
from tests.support.secrets import keep_log

__all__ = ["PostgresCluster", "find_bin", "postgres_cluster"]

USER = "chorus"
_START_SECONDS = 60


def find_bin() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``: PATH first, then Debian's folders."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    return None


@dataclass
class PostgresCluster:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, dbname=database, autocommit=True
        )

    def create_database(self) -> str:
        """A new empty database's name (one per test, so no test sees another's rows)."""
        name = "t_" + uuid.uuid4().hex[:16]
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name


@contextmanager
def postgres_cluster(bin_dir: Path) -> Iterator[PostgresCluster]:
    root = Path(tempfile.mkdtemp(prefix="chorus-pg-"))
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root), "LC_ALL": "C"}
    data = root / "data"
    log = Path(tempfile.mkdtemp(prefix="chorus-pg-log-")) / "postgres.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        made = subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust"]
            + ["--no-sync", "--encoding=UTF8", "--locale=C"],
            cwd=root,
            env=env,
            capture_output=True,
            timeout=120,
            **run_as,
        )
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed: {made.stdout.decode()}{made.stderr.decode()}")
        port = free_port()
        settings = ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-k", str(root)]
                + ["-h", "127.0.0.1", "-p", str(port)]
                + [arg for setting in settings for arg in ("-c", setting)],
                cwd=root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                **run_as,
            )
        cluster = PostgresCluster(port=port, process=process, log=log)
        deadline = time.monotonic() + _START_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"postgres exited with {process.returncode}: {log.read_text()}")
            try:
                cluster.connect().close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start: {log.read_text()}") from None
                time.sleep(0.1)
        yield cluster
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown: disconnects the clients
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)
        keep_log(str(log), log)  # deleted below; tests/test_secrets_in_logs.py reads it later
        shutil.rmtree(log.parent, ignore_errors=True)
