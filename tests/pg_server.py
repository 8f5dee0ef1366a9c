"""A throwaway PostgreSQL server for the store tests and the vote benchmark: Debian's ``postgresql``
package (installed by ``scripts/install.sh --test``), a cluster in a temp folder, TCP on a free
127.0.0.1 port, trust authentication for one user. Nothing of the machine's own clusters is used.

initdb and postgres refuse to run as root, and CI runs as root: there the server runs as the
``postgres`` user the Debian package creates (``runuser``), in a folder it owns.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = "run scripts/install.sh --test (it installs the Debian postgresql package)"
USER = "arena"


class PostgresMissing(RuntimeError):
    """The server binaries (or the postgres user, when running as root) are not on this machine."""


def server_bin() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb, pg_ctl and postgres."""
    found = [d for d in Path("/usr/lib/postgresql").glob("*/bin")
             if all((d / tool).exists() for tool in ("initdb", "pg_ctl", "postgres"))]
    if not found:
        raise PostgresMissing(f"PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: {INSTALL_HINT}")
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)


class TempPostgres:
    """Start with ``TempPostgres()``, get URLs of fresh databases with ``new_database()``, ``stop()`` at
    the end. ``durable=False`` turns fsync off (tests: nothing to keep); the benchmark keeps the
    defaults so its figure is what a real server does."""

    def __init__(self, durable: bool = True):
        from arena.serving.supervisor import free_port

        self.bin = server_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="arena-pg-"))  # under /tmp: the postgres user can reach it
        self._as = self._run_as_prefix()
        self.port = free_port()
        self._count = 0
        self._run("initdb", "-D", str(self.dir / "data"), "-U", USER, "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync", "--no-instructions")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "server.log"), "-w", "-t", "60",
                      "-o", options, "start")
        except RuntimeError:
            self._remove()
            raise

    def _run_as_prefix(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresMissing(f"running as root needs the 'postgres' user to own the server: {INSTALL_HINT}") \
                from None
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        return ["runuser", "-u", "postgres", "--"]

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self._as, str(self.bin / tool), *args], capture_output=True, text=True, cwd="/")
        if done.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        """CREATE DATABASE with a new name; its URL. Each test gets an empty one."""
        self._count += 1
        name = f"arena_{self._count}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        finally:
            self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
