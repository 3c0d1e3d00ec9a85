"""A real PostgreSQL server for the tests: Debian's `initdb` / `pg_ctl` run into a temporary
directory, on a free port and a Unix socket in that directory, stopped at the end.

    server = PostgresServer.start()      # or the `postgres` session fixture (tests/conftest.py)
    url = server.new_database()          # postgresql://akfak@/akfak_3?host=...&port=...
    url = server.new_schema()            # a fresh schema in one shared database (cheap)
    server.stop()

PostgreSQL refuses to run as root: as root the server runs as the `postgres` system user
(made if missing) through `runuser`.  The server does not fsync (`fsync=off`): tests check
what is committed, not what survives a power cut, and the machine is shared (the
benchmark starts it with `fsync=True`).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "akfak"


def find_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> list[str]:
    """The command prefix running a program as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class PostgresServer:
    bin_dir: Path
    base: Path
    port: int
    _names: itertools.count = field(default_factory=lambda: itertools.count(1))
    _schema_db: str | None = None
    fsync: bool = False

    @property
    def options(self) -> str:
        durability = "" if self.fsync else "-c fsync=off -c full_page_writes=off "
        return (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 {durability}"
                f"-c max_connections=200 -c shared_buffers=64MB")

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base

    @classmethod
    def start(cls, bin_dir: Path | None = None, *, fsync: bool = False) -> PostgresServer:
        bin_dir = bin_dir or find_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError("initdb and pg_ctl not found (apt-get install postgresql)")
        base = Path(tempfile.mkdtemp(prefix="akfak-pg-"))
        prefix = _run_as()
        if prefix:
            user = pwd.getpwnam("postgres")
            os.chown(base, user.pw_uid, user.pw_gid)
        server = cls(bin_dir, base, _free_port(), fsync=fsync)
        subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(server.data), "-U", SUPERUSER,
                        "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(server.data), "-w", "-t", "60",
                        "-l", str(base / "server.log"), "-o", server.options, "start"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return server

    def url(self, database: str = "postgres") -> str:
        """A libpq URL over the Unix socket (host= names the socket directory)."""
        return f"postgresql://{SUPERUSER}@/{database}?host={quote(str(self.socket_dir))}&port={self.port}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[call-overload]

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        name = f"akfak_{next(self._names)}"
        self.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def new_schema(self) -> str:
        """The URL of a new, empty schema (first on the search path) in a shared database:
        much cheaper than a database, for the many small storage tests."""
        if self._schema_db is None:
            self._schema_db = f"akfak_{next(self._names)}"
            self.execute(f"CREATE DATABASE {self._schema_db}")
        name = f"s{next(self._names)}"
        self.execute(f"CREATE SCHEMA {name}", self._schema_db)
        return f"{self.url(self._schema_db)}&options={quote(f'-csearch_path={name}')}"

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast", "-o", self.options)

    def stop(self) -> None:
        try:
            self._ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def _ctl(self, *args: str) -> None:
        subprocess.run([*_run_as(), str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-w",
                        "-t", "60", "-l", str(self.base / "server.log"), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
