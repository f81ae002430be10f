"""A private PostgreSQL under ./var/ for machines with no DATABASE_URL (and for the test suite).

The server listens on a unix socket only. As root, initdb and pg_ctl run as the
`postgres` user (initdb refuses root). A second process finds the server already
running and shares it; the last process out stops it.

Who uses the cluster is kept by the kernel, in two flock(2) locks on files of the cluster's directory:
every user holds a shared lock on `users.lock` for as long as it uses the server, and starting or
stopping happens under an exclusive lock on `.lock`. A process leaving takes `.lock`, and stops the
server only if it can then lock `users.lock` exclusively (nobody else holds it shared). A newcomer
waits on `.lock` while someone stops, then finds the server stopped and starts it. A killed process's
locks go with it, so a crash never leaves a count that is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import hashlib
import logging
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote

import asyncpg

from service.config import MiB, Settings
from service.db import ensure_database
from service.store import server

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
PORT = 5432


class EmbeddedError(Exception):
    """The embedded server cannot run here; the message is one line telling what to do."""


def find_bin_dir(path: str | None = None, versioned: str = "/usr/lib/postgresql/*/bin", wheel: bool = True) -> Path:
    """PATH first, then Debian's /usr/lib/postgresql/*/bin (newest), then the pgserver wheel."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl", path=path)
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    versions = glob.glob(versioned)
    candidates += sorted((Path(p) for p in versions), key=lambda p: _version_key(p.parent.name), reverse=True)
    if wheel:
        try:
            import pgserver  # the optional `embedded` extra

            candidates.append(Path(pgserver.__file__).parent / "pginstall" / "bin")
        except ImportError:
            pass
    for directory in candidates:
        if all((directory / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise EmbeddedError(
        "no PostgreSQL server binaries found (initdb, pg_ctl, postgres): install PostgreSQL 15+, "
        "`pip install chunkd[embedded]`, or set DATABASE_URL"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root; None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(os.environ.get("CHUNKD_PG_USER", "postgres"))
    except KeyError:
        try:
            return pwd.getpwnam("nobody")
        except KeyError:
            raise EmbeddedError(
                "running as root and no `postgres` user exists to run PostgreSQL: create one or set DATABASE_URL"
            ) from None


@dataclass
class EmbeddedPostgres:
    base_dir: Path
    server_options: dict[str, str] = field(default_factory=dict)
    started_here: bool = False
    _user_lock: IO[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.base_dir = self.base_dir.resolve()
        self.bin_dir = find_bin_dir()
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "postgres.log"
        self.account = _run_as()
        socket_dir = self.base_dir / "run"
        if len(str(socket_dir)) > 80:  # unix socket paths are limited to 107 bytes
            digest = hashlib.sha1(str(self.base_dir).encode()).hexdigest()[:12]
            socket_dir = Path(tempfile.gettempdir()) / f"chunkd-pg-{digest}"
        self.socket_dir = socket_dir

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@/{database}?host={quote(str(self.socket_dir))}&port={PORT}"

    def start(self) -> None:
        """Initialise on first use, then start unless another process already did; either way this
        process is a user of the server until stop()."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        with self._starting_or_stopping():
            self._hand_over(self.base_dir, self.socket_dir)
            if not (self.data_dir / "PG_VERSION").is_file():
                self._initdb()
            user_lock = open(self.base_dir / "users.lock", "ab")  # noqa: SIM115 - held until stop()
            fcntl.flock(user_lock, fcntl.LOCK_SH)  # never waits: an exclusive holder also holds .lock
            try:
                if self.running():
                    log.info("embedded PostgreSQL already running", extra={"action": "pg_shared"})
                else:
                    self._pg_start()
            except BaseException:
                user_lock.close()
                raise
            self._user_lock = user_lock

    def stop(self) -> None:
        """Leaves the server: stops it if no other process uses it (the last one out)."""
        if self._user_lock is None:
            return
        with self._starting_or_stopping():
            try:
                fcntl.flock(self._user_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                last = True
            except BlockingIOError:
                last = False
            try:
                if not last:
                    log.info("embedded PostgreSQL left running for its other users", extra={"action": "pg_left"})
                elif self.running():
                    self._pg("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.data_dir))
                    log.info("embedded PostgreSQL stopped", extra={"action": "pg_stopped"})
            finally:
                self._user_lock.close()
                self._user_lock = None
                self.started_here = False

    @contextlib.contextmanager
    def _starting_or_stopping(self) -> Iterator[None]:
        """One process at a time starts or stops the server (two starting at once: one inits, both share)."""
        with open(self.base_dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _pg_start(self) -> None:
        options = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "port": str(PORT),
            **self._preload(),
            **self.server_options,
        }
        flags = " ".join(f"-c {k}={v}" for k, v in options.items())
        self._pg(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            flags,
            env=server_environment(),
        )
        self.started_here = True
        log.info("embedded PostgreSQL started", extra={"action": "pg_started", "data_dir": str(self.data_dir)})

    def running(self) -> bool:
        return self._pg("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def bin(self, name: str) -> Path:
        return self.bin_dir / name

    def _initdb(self) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)  # a half-made cluster from an interrupted first run
        self._pg(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C",
            "--no-instructions",
        )

    @property
    def preloads_stat_statements(self) -> bool:
        """pg_stat_statements feeds /api/admin/db; preload it when these binaries ship it."""
        libdirs = [self.bin_dir.parent / "lib", self.bin_dir.parent / "lib" / "postgresql"]
        return any((d / "pg_stat_statements.so").is_file() for d in libdirs)

    def _preload(self) -> dict[str, str]:
        return {"shared_preload_libraries": "pg_stat_statements"} if self.preloads_stat_statements else {}

    def _hand_over(self, *paths: Path) -> None:
        """As root, the server's account must own its directories and reach them."""
        if self.account is None:
            return
        for path in paths:
            for parent in path.parents:
                if parent.exists() and not os.stat(parent).st_mode & 0o001:
                    raise EmbeddedError(
                        f"{parent} is not traversable by the `{self.account.pw_name}` user "
                        "that runs the embedded PostgreSQL: chmod o+x it or set DATABASE_URL"
                    )
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def _pg(
        self, exe: str, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin(exe)), *args]
        if self.account is not None:
            command = ["runuser", "-u", self.account.pw_name, "--", *command]  # keeps the environment
        result = subprocess.run(command, capture_output=True, text=True, cwd="/", env=env)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise EmbeddedError(f"{exe} failed: {detail[-1] if detail else result.returncode} (see {self.log_file})")
        return result


# glibc's malloc in the server's processes. A chunk reaches its backend as one protocol message: the
# message buffer and the bytea made from it are each chunk-sized, and above glibc's mmap threshold every
# such allocation is a fresh mmap whose pages the kernel faults in and zeroes, to unmap them at free:
# perf put 28 % of a storing backend's samples in those page faults. Up to 32 MiB (glibc's largest
# threshold) they come from the heap instead, and freed memory up to 64 MiB stays for the next chunk.
# glibc's own names for GLIBC_TUNABLES' glibc.malloc.mmap_threshold and trim_threshold: a GLIBC_TUNABLES
# with several entries reaches a program started through another (runuser, pg_ctl) with only its first.
MALLOC_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(32 * MiB), "MALLOC_TRIM_THRESHOLD_": str(64 * MiB)}


def server_environment() -> dict[str, str]:
    """The environment pg_ctl starts the server with: ours with MALLOC_ENVIRONMENT (a value of the
    user's own wins)."""
    return {**MALLOC_ENVIRONMENT, **os.environ}


def _has_c_utf8() -> bool:
    return Path("/usr/lib/locale/C.utf8").exists() or Path("/usr/lib/locale/C.UTF-8").exists()


DATABASE = "chunkd"
VAR_DIR = Path("var")


@dataclass(frozen=True)
class Setting:
    """A PostgreSQL setting chunkd's workload wants at least `value` of, and what less of it costs."""

    name: str
    value: str
    cost: str


def machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def workload_settings(memory: int | None = None) -> list[Setting]:
    """Settings for chunkd's workload: every chunk is written once to the WAL and the heap, read once
    at assembly and deleted right after (bench/compare.py measured each; the figures are in the README).
    `chunkd doctor` shows an external database where it has less."""
    memory = machine_memory() if memory is None else memory
    shared = max(128, min(1024, memory // 16 // MiB))  # 1/16 of the machine, 128 MB .. 1 GB
    return [
        Setting(
            "max_wal_size",
            "8GB",
            "each max_wal_size of chunk bytes forces a checkpoint, after which deleting assembled chunks "
            "logs a full-page image of every page: 1GB (stock) doubles the WAL per uploaded byte",
        ),
        Setting("min_wal_size", "1GB", "WAL segments are recycled instead of created and zero-filled anew"),
        Setting(
            "checkpoint_timeout",
            "30min",
            "a timed checkpoint between a chunk's insert and its delete costs the same full-page images",
        ),
        Setting(
            "wal_buffers",
            "64MB",
            "an 8 MiB chunk fills the stock 16MB of WAL buffers in two rows: backends then wait for the WAL writer",
        ),
        Setting(
            "shared_buffers",
            f"{shared}MB",
            "chunk pages are read back by the worker soon after they are written: the stock 128MB "
            "sends them to the kernel and back",
        ),
    ]


def tuned_options(memory: int | None = None) -> dict[str, str]:
    """workload_settings as server options for the embedded PostgreSQL."""
    return {s.name: s.value for s in workload_settings(memory)}


@contextlib.contextmanager
def database(settings: Settings, *, options: dict[str, str] | None = None) -> Iterator[Settings]:
    """Settings whose DATABASE_URL is usable: the configured one, or the embedded server's.
    The embedded setup is a single machine's: it also keeps a generated JWT_SECRET under ./var/, and
    runs PostgreSQL with the settings of workload_settings."""
    if settings.database_url:
        yield settings
        return
    pg = EmbeddedPostgres(VAR_DIR / "postgres", server_options={**tuned_options(), **(options or {})})
    pg.start()
    try:
        asyncio.run(prepare_database(pg, DATABASE))
        yield settings.replace(database_url=pg.url(DATABASE), jwt_secret=settings.jwt_secret or local_secret())
    finally:
        pg.stop()


def local_secret(path: Path = VAR_DIR / "jwt_secret") -> str:
    """A JWT key made on first use and kept (0600) so tokens survive restarts."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".jwt-")  # mode 0600
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs wins
            os.link(tmp, path)
        os.unlink(tmp)
    return path.read_text().strip()


async def prepare_database(pg: EmbeddedPostgres, name: str) -> None:
    await ensure_database(pg.url("postgres"), name)
    if pg.preloads_stat_statements:
        conn = await asyncpg.connect(pg.url(name))
        try:
            await server.create_stat_statements(conn)
        finally:
            await conn.close()
