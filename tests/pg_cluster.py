"""A real PostgreSQL for the tests: `SMSGW_TEST_PG_DSN`, or a throwaway cluster of our own.

The throwaway cluster is made from the server binaries of Debian's `postgresql` package
(`/usr/lib/postgresql/<version>/bin`): `initdb` into a temporary directory, `pg_ctl start`
listening only on a unix socket in that directory (no port to collide with other runs on
the machine), fsync left on as in production, `pg_ctl stop` and the directory removed at
the end of the session. `initdb` and `pg_ctl` refuse to run as root, so as root they run as
the `postgres` user (`runuser`).

Each test gets a database of its own (`Cluster.new_database`), dropped afterwards.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import attrs

DSN_VARIABLE = "SMSGW_TEST_PG_DSN"
REQUIRE_VARIABLE = "SMSGW_TEST_REQUIRE_PG"
SOCKET_PORT = 5432  # only names the socket file: the cluster listens on no TCP port
START_TIMEOUT_S = 60


def server_bin_dir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: (
            int(Path(path).parent.parent.name) if Path(path).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(found[-1]).parent if found else None


def unavailable_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    if os.environ.get(DSN_VARIABLE):
        return None
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"psycopg not importable ({exc}): pip install -e '.[dev,postgres]'"
    if server_bin_dir() is None:
        return (
            f"no {DSN_VARIABLE} and no PostgreSQL server binaries"
            " (apt-get install postgresql, or point SMSGW_TEST_PG_DSN at a server)"
        )
    return None


def with_database(dsn: str, dbname: str) -> str:
    """The libpq URL `dsn` naming another database (query parameters kept)."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(dbname)))


@attrs.define
class Cluster:
    """A PostgreSQL server the tests may create databases on."""

    dsn: str  # a libpq URL of a database to connect to for CREATE / DROP DATABASE
    directory: Path | None = None  # set when we started the server ourselves
    bin_dir: Path | None = None
    _names: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))

    @property
    def data_dir(self) -> Path:
        assert self.directory is not None, "not a cluster of our own"
        return self.directory / "data"

    def new_database(self) -> str:
        """Create an empty database; its URL."""
        import psycopg

        name = f"smsgw_test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return with_database(self.dsn, name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.lstrip("/"))
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on our own cluster."""
        assert self.bin_dir is not None, "not a cluster of our own"
        _run_as_owner([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args])

    def start(self) -> None:
        """Start our own cluster (again)."""
        assert self.directory is not None and self.bin_dir is not None, "not a cluster of our own"
        _start(self.bin_dir, self.directory)

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is cut, the server back when it returns.
        The log file again: without it the server would write to our pipes, held open."""
        assert self.directory is not None, "not a cluster of our own"
        self.pg_ctl("restart", "-m", "fast", "-w", "-l", str(self.directory / "server.log"))

    def stop(self) -> None:
        if self.directory is None:
            return
        try:
            self.pg_ctl("stop", "-m", "fast", "-w")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def _run_as_owner(command: Sequence[str]) -> None:
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, timeout=START_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({done.returncode}):"
            f" {done.stderr.decode(errors='replace')}{done.stdout.decode(errors='replace')}"
        )


def _start(bin_dir: Path, directory: Path) -> None:
    options = (
        f"-p {SOCKET_PORT} -k {directory} -c listen_addresses=''"
        " -c max_connections=200 -c shared_buffers=64MB"
    )
    _run_as_owner(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(directory / "data"),
            "-l",
            str(directory / "server.log"),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-o",
            options,
            "start",
        ]
    )


def start_cluster() -> Cluster:
    """The server of SMSGW_TEST_PG_DSN, or a new throwaway cluster."""
    given = os.environ.get(DSN_VARIABLE)
    if given:
        return Cluster(dsn=given)
    bin_dir = server_bin_dir()
    assert bin_dir is not None, "no PostgreSQL server binaries"
    # Short: the socket path (directory + /.s.PGSQL.5432) must fit in 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="smsgw-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
    data = directory / "data"
    try:
        _run_as_owner(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",  # the cluster is thrown away: only its runtime fsyncs matter
            ]
        )
        _start(bin_dir, directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    query = urllib.parse.urlencode({"host": str(directory), "port": str(SOCKET_PORT)})
    return Cluster(
        dsn=f"postgresql://postgres@/postgres?{query}", directory=directory, bin_dir=bin_dir
    )
