"""A PostgreSQL 15 streaming-replication cluster of the tests' own, as real processes: a primary,
standbys cloned from it by pg_basebackup (one may be synchronous, one may apply commits late on
purpose), and PgBouncer in transaction mode in front of the primary; in a temporary folder, on free
loopback ports, as the `postgres` OS user (neither runs as root), all stopped and removed at exit.
`cluster()` makes one to taste; `replicated()` the usual shape, which the `postgres_cluster` fixture
(tests/conftest.py) yields."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
from dataclasses import dataclass
import os
from pathlib import Path
import shutil
import signal
import subprocess
import tempfile
import time
from typing import IO, Any

from devtools.tansu import free_port
from tests.processes import listens

BIN = Path("/usr/lib/postgresql/15/bin")
OWNER = "postgres"
# The delayed standby of `postgres_cluster` applies each commit this many seconds after it.
APPLY_DELAY = 2.0
# As root, the servers run as OWNER; as anyone else, as themselves.
_AS_ROOT = os.geteuid() == 0
# Nothing from the tests' environment (PGHOST, PGPORT, PGDATA...) reaches the tools.
_ENV = {"PATH": f"{BIN}:/usr/sbin:/usr/bin:/bin", "LC_ALL": "C.UTF-8"}

# Settings for tests: durability off (the data is thrown away), little memory, replication on.
_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
cluster_name = 'primary'
max_connections = 100
shared_buffers = 16MB
fsync = off
full_page_writes = off
synchronous_commit = on
wal_level = replica
max_wal_senders = 10
wal_keep_size = 128MB
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
"""

# No ignore_startup_parameters: asyncpg sends client_encoding, and the service timezone and
# application_name, all of which PgBouncer 1.18 tracks itself.
_PGBOUNCER = """
[databases]
* = host=127.0.0.1 port={upstream}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {folder}
auth_type = trust
auth_file = {folder}/userlist.txt
pool_mode = transaction
max_client_conn = 200
default_pool_size = 20
"""


def _as_owner(args: list[str | Path], cwd: Path, output: IO[Any] | int) -> subprocess.Popen[str]:
    """A process as OWNER, started in `cwd`, its stdout and stderr to `output`."""
    return subprocess.Popen(
        [str(arg) for arg in args], cwd=cwd, env=_ENV, stdout=output, stderr=subprocess.STDOUT, text=True,
        user=OWNER if _AS_ROOT else None, group=OWNER if _AS_ROOT else None, extra_groups=[] if _AS_ROOT else None,
    )  # fmt: skip


def _run(*args: str | Path, cwd: Path) -> str:
    """Runs a tool as OWNER; what it prints, or a RuntimeError with it."""
    with _as_owner(list(args), cwd, subprocess.PIPE) as process:
        try:
            output, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    if process.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed ({process.returncode}): {output}")
    return output


def _until(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not {what} within {timeout} s")
        time.sleep(0.02)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


class Server:
    """A PostgreSQL server of the cluster, the primary or a standby, on 127.0.0.1:`port`."""

    def __init__(self, name: str, data: Path, port: int) -> None:
        self.name, self.data, self.port = name, data, port
        self.log = data.parent / f"{name}.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{OWNER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Starts it, once it accepts connections (a standby: once its data is consistent)."""
        try:
            _run(BIN / "pg_ctl", "start", "-w", "-t", "60", "-D", self.data, "-l", self.log, cwd=self.data.parent)
        except RuntimeError as error:
            raise RuntimeError(f"{self.name} did not start: {error}\nits log ends with:\n{_tail(self.log)}") from None

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m <mode>`: it refuses connections once this returns. Kills it when that fails."""
        try:
            _run(BIN / "pg_ctl", "stop", "-w", "-t", "30", "-m", mode, "-D", self.data, cwd=self.data.parent)
        except (RuntimeError, subprocess.TimeoutExpired):
            self.kill()

    def kill(self) -> None:
        """SIGQUIT to the postmaster (an immediate shutdown), then SIGKILL if it outlives that."""
        pid_file = self.data / "postmaster.pid"  # there while it runs
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
            try:
                _until(lambda: not pid_file.exists(), "stopped", 5)
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)

    def sql(self, *statements: str, database: str = "postgres") -> str:
        """What psql prints for `statements`, each on its own (unaligned, tuples only)."""
        commands = [part for statement in statements for part in ("-c", statement)]
        return _run(
            BIN / "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port), "-U", OWNER,
            "-d", database, *commands, cwd=self.data.parent,
        ).strip()  # fmt: skip


@dataclass
class PgBouncer:
    """A PgBouncer in transaction mode in front of the primary: any database name is the primary's."""

    port: int
    process: subprocess.Popen[str]
    log: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{OWNER}@127.0.0.1:{self.port}/{database}"


class Cluster:
    """A primary and the standbys and PgBouncers added to it, all in `folder`; `cluster()` makes one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.primary = Server("primary", folder / "primary", free_port())
        self.standbys: dict[str, Server] = {}
        self.poolers: list[PgBouncer] = []
        self._synchronous: list[str] = []

    def _start_primary(self) -> None:
        data = self.primary.data
        _run(
            BIN / "initdb", "-D", data, "-U", OWNER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
            "--no-instructions", cwd=self.folder,
        )  # fmt: skip
        # initdb's pg_hba.conf: trust on the socket and the loopback, replication too.
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(_SETTINGS.format(port=self.primary.port, sockets=self.folder))
        self.primary.start()

    def standby(self, name: str, *, apply_delay: float = 0, synchronous: bool = False) -> Server:
        """A standby streaming from the primary as `name` (its application_name), started. It
        applies each commit `apply_delay` seconds late (recovery_min_apply_delay); a synchronous
        one has applied a commit when it returns on the primary (synchronous_commit = remote_apply),
        and while it is down, commits on the primary wait."""
        if not name.isidentifier() or name == self.primary.name or name in self.standbys:
            raise ValueError(f"a standby needs a new name made of letters, digits and _: {name!r}")
        server = Server(name, self.folder / name, free_port())
        _run(
            BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", OWNER, "-D", server.data,
            "-R", "-X", "stream", "--checkpoint=fast", "--no-sync", cwd=self.folder,
        )  # fmt: skip
        # After what -R wrote: the last value of a setting wins.
        with (server.data / "postgresql.auto.conf").open("a") as conf:
            conf.write(
                f"primary_conninfo = 'host=127.0.0.1 port={self.primary.port} user={OWNER} application_name={name}'\n"
                f"port = {server.port}\ncluster_name = '{name}'\n"
                f"recovery_min_apply_delay = '{apply_delay * 1000:.0f}ms'\n"
            )
        self.standbys[name] = server
        server.start()
        if synchronous:
            self._synchronous.append(name)
            self._wait_for_synchronous()
        return server

    def _wait_for_synchronous(self) -> None:
        names = ", ".join(f'"{name}"' for name in self._synchronous)
        self.primary.sql(
            f"ALTER SYSTEM SET synchronous_standby_names = 'FIRST {len(self._synchronous)} ({names})'",
            "ALTER SYSTEM SET synchronous_commit = 'remote_apply'",
            "SELECT pg_reload_conf()",
        )
        count = "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
        _until(lambda: self.primary.sql(count) == str(len(self._synchronous)), "synchronous", 30)
        # The checkpointer reloads before it checkpoints: then the backends wait for the standbys.
        self.primary.sql("CHECKPOINT")

    def pgbouncer(self) -> PgBouncer:
        """A PgBouncer in front of the primary, on a free port, started."""
        if not (binary := shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")):
            raise RuntimeError("pgbouncer is not installed: `make pooler-tools` installs Debian's")
        port = free_port()
        (self.folder / "userlist.txt").write_text(f'"{OWNER}" ""\n')
        ini = self.folder / f"pgbouncer-{port}.ini"
        ini.write_text(_PGBOUNCER.format(upstream=self.primary.port, port=port, folder=self.folder))
        log = self.folder / f"pgbouncer-{port}.log"
        with log.open("w") as output:
            process = _as_owner([binary, ini], self.folder, output)
        pooler = PgBouncer(port, process, log)
        self.poolers.append(pooler)
        if not listens(port, process):
            raise RuntimeError(f"pgbouncer did not start: {_tail(log)}")
        return pooler

    def create_database(self, name: str) -> None:
        """A database on the primary; on a standby once it replays it (`wait_replayed`)."""
        self.primary.sql(f'CREATE DATABASE "{name}"')

    def wait_replayed(self, standby: Server, timeout: float = 10) -> None:
        """Returns once `standby` has replayed the primary's WAL up to where it is now."""
        lsn = self.primary.sql("SELECT pg_current_wal_lsn()")
        query = f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
        _until(lambda: standby.sql(query) == "t", f"{standby.name} replayed {lsn}", timeout)

    def close(self) -> None:
        """Stops everything (the data is thrown away: an immediate shutdown)."""
        for pooler in self.poolers:
            pooler.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                pooler.process.wait(timeout=5)
            pooler.process.kill()
            pooler.process.wait()
        for server in [*self.standbys.values(), self.primary]:
            server.stop("immediate")


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """A started primary in a temporary folder of its own; all in it stops, and the folder goes, at exit."""
    folder = Path(tempfile.mkdtemp(prefix="commons-users-cluster-"))
    made = Cluster(folder)
    try:
        if _AS_ROOT:
            shutil.chown(folder, OWNER, OWNER)
        made._start_primary()
        yield made
    finally:
        made.close()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Replicated:
    """What `postgres_cluster` yields: a primary, a synchronous standby (keep it running: commits wait
    for it), a standby `apply_delay` seconds behind, and a PgBouncer in front of the primary."""

    cluster: Cluster
    primary: Server
    synchronous: Server
    delayed: Server
    pgbouncer: PgBouncer
    apply_delay: float


@contextlib.contextmanager
def replicated(apply_delay: float = APPLY_DELAY) -> Iterator[Replicated]:
    with cluster() as made:
        synchronous = made.standby("synchronous", synchronous=True)
        delayed = made.standby("delayed", apply_delay=apply_delay)
        yield Replicated(made, made.primary, synchronous, delayed, made.pgbouncer(), apply_delay)
