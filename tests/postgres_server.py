"""A throwaway PostgreSQL server for the tests: a fresh cluster (initdb) in a temporary folder, started with
pg_ctl on loopback and a free port, trusting local connections, stopped and removed afterwards.

PostgreSQL refuses to run as root; as root the server runs as the ``postgres`` user that Debian's package
creates. Where the server's programs or the driver (psycopg2) are missing, `start` says why, so that the
test is skipped with that reason.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Where Debian's postgresql packages put the server's programs (not on PATH).
_DEBIAN_BINS = "/usr/lib/postgresql/*/bin"


def find_program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"{_DEBIAN_BINS}/{name}"))
    return candidates[-1] if candidates else None


def unavailable() -> str | None:
    """Why no server can be started here, or None."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install psycopg2-binary, the 'test' extra)"
    missing = [name for name in ("initdb", "pg_ctl") if find_program(name) is None]
    if missing:
        return (f"PostgreSQL's server programs are not installed ({', '.join(missing)} not found; on Debian: "
                "apt-get install -y postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL refuses to run as root"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def running_server() -> Iterator[str]:
    """Start a server whose cluster lives in a new temporary folder (one the server's user can reach, unlike
    pytest's, which only its owner may enter); yield its URL (database and user ``postgres``)."""
    folder = Path(tempfile.mkdtemp(prefix="convbench-postgres-"))
    try:
        with _server_in(folder) as url:
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _server_in(folder: Path) -> Iterator[str]:
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        for path in (folder, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    port = _free_port()

    def run(*command: str) -> None:
        done = subprocess.run(_as_server_user(list(command)), capture_output=True, text=True, timeout=120,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:2])} failed: {(done.stdout + done.stderr)[-2000:]}")

    run(find_program("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off"
    run(find_program("pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w", "start")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(find_program("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
