"""A real ``carrack-stack run`` of the test's own (free ports, state folder in a temp dir).

Fault tests kill, pause and restart its children; the test session's shared servers
(exported by ``carrack-stack test``) are never touched. ``stack`` is module-scoped: one stack
per test module. A module passes extra environment to it by overriding ``stack_environment``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from config.stack.services import BASE_DIR, free_port

# What `carrack-stack test` exports for the session's servers: a stack of our own must not see it.
CLEARED = ("DATABASE_URL", "REDIS_URL", "CHAIN_RPC_URL", "CHAIN_DEPLOYMENTS_FILE",
           "DJANGO_SETTINGS_MODULE", "CARRACK_STATE_DIR")
PORT_NAMES = ("WEB", "PG", "REDIS", "CHAIN", "DICOM")


@dataclass
class Stack:
    """A running ``carrack-stack run`` and how to reach, inspect and hurt its children."""

    process: subprocess.Popen
    ports: dict[str, int]
    state_dir: Path
    env: dict[str, str]
    output: list[str] = field(default_factory=list)
    banner: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ports['WEB']}"

    @property
    def token(self) -> str:
        return self.banner.split("Authorization: Bearer ")[1].split(")")[0]

    @property
    def pg_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.ports['PG']} user=postgres dbname=carrack connect_timeout=3"

    def text(self) -> str:
        return "\n".join(self.output)

    def health(self, timeout: float = 10) -> tuple[int, dict]:
        """``/healthz``'s status and body; 0 when web did not answer at all."""
        try:
            with urllib.request.urlopen(f"{self.base}/healthz", timeout=timeout) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)
        except OSError:
            return 0, {}

    def wait_healthy(self, timeout: float = 60) -> float:
        """Seconds until ``/healthz`` answers 200; fails the test past ``timeout``."""
        started = time.monotonic()
        last: tuple[int, dict] = (0, {})
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                pytest.fail(f"carrack-stack run exited:\n{self.text()}")
            last = self.health()
            if last[0] == 200:
                return time.monotonic() - started
            time.sleep(0.2)
        pytest.fail(f"not healthy after {timeout}s: {last}\n{self.text()[-3000:]}")

    def pid_of(self, name: str) -> int:
        """The pid of a child as a crash would hit it: the server itself, not a wrapper."""
        if name == "postgres":
            return int((self.state_dir / "postgres" / "postmaster.pid").read_text().split()[0])
        # anvil runs under npm's node launcher; every other child is the supervisor's own.
        for child in psutil.Process(self.process.pid).children(recursive=name == "anvil"):
            try:
                if _is(name, child):
                    return child.pid
            except psutil.NoSuchProcess:
                continue
        raise LookupError(f"no {name} process under the supervisor")

    def kill(self, name: str) -> int:
        pid = self.pid_of(name)
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_for_new(self, name: str, old_pid: int, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = self.pid_of(name)
                if pid != old_pid and psutil.pid_exists(pid):
                    return pid
            except (LookupError, OSError, ValueError):
                pass
            time.sleep(0.05)
        pytest.fail(f"{name} was not started again within {timeout}s\n{self.text()[-3000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def _is(name: str, process: psutil.Process) -> bool:
    argv = process.cmdline()
    program = " ".join(argv[:2])  # our Python entry points run as `python .venv/bin/<script>`
    if name == "anvil":
        return process.name() == "anvil"
    if name == "redis":
        return "redis-server" in argv[0]
    if name == "web":
        return "gunicorn" in program
    if name in ("worker", "beat"):
        return "celery" in program and name in argv
    if name == "dicom-scp":
        return "dicom_scp" in argv
    raise ValueError(name)


def stack_env(state_dir: Path, ports: dict[str, int], extra: dict[str, str]) -> dict[str, str]:
    """The environment of a hand-started stack: only its state folder and ports, no URLs."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update({f"CARRACK_{name}_PORT": str(port) for name, port in ports.items()})
    env["CARRACK_STATE_DIR"] = str(state_dir)
    env.update(extra)
    return env


def start_stack(state_dir: Path, extra_env: dict[str, str] | None = None, timeout: float = 180) -> Stack:
    """Start ``carrack-stack run`` and return once it printed its banner (healthy)."""
    ports = {name: free_port() for name in PORT_NAMES}
    env = stack_env(state_dir, ports, extra_env or {})
    process = subprocess.Popen([sys.executable, "-m", "config.stack.cli", "run"], cwd=BASE_DIR, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stack = Stack(process=process, ports=ports, state_dir=state_dir, env=env)
    threading.Thread(target=_read_output, args=(stack,), daemon=True).start()
    deadline = time.monotonic() + timeout
    while "Press Ctrl-C to stop." not in stack.output:
        if process.poll() is not None or time.monotonic() > deadline:
            stack.stop()
            pytest.fail(f"carrack-stack run did not come up:\n{stack.text()}")
        time.sleep(0.2)
    stack.banner = stack.text()
    return stack


def _read_output(stack: Stack) -> None:
    for line in stack.process.stdout:
        stack.output.append(line.rstrip("\n"))


@pytest.fixture(scope="module")
def stack_environment() -> dict[str, str]:
    """Extra environment for the module's stack (override in a test module)."""
    return {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, stack_environment):
    """A healthy ``carrack-stack run`` of this module's own; stopped (Ctrl-C) afterwards."""
    running = start_stack(tmp_path_factory.mktemp("stack") / "var", stack_environment)
    yield running
    running.stop()
