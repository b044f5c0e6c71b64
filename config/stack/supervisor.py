"""Start the whole system in the foreground (``make run``) or the test servers (``make test``).

The supervisor owns every child: servers first (PostgreSQL, Redis, anvil), then the
one-off steps (migrate, deploy contracts, demo login), then web, worker and beat. Once the
stack is healthy, a child that dies is started again (``supervision.py``); one that keeps
dying stops the stack. It stops them in reverse order on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .addresses import embedded_ports
from .services import (
    BASE_DIR,
    AnvilServer,
    AppProcess,
    PostgresServer,
    RedisServer,
    Server,
    StackError,
    free_port,
)
from .supervision import Supervisor

ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
EXTERNAL_URL_VARIABLES = {"postgres": "DATABASE_URL", "redis": "REDIS_URL", "anvil": "CHAIN_RPC_URL"}


def default_ports() -> dict[str, int]:
    """Fixed ports for ``make run`` so URLs stay the same across restarts; each can be moved.

    The settings derive their default URLs from the same variables (``addresses.py``).
    """
    return embedded_ports(os.environ)


def embedded_servers(state_dir: Path, ports: dict[str, int], *, persist_chain: bool) -> list[Server]:
    """The servers to start: each one whose URL the environment does not already name."""
    candidates: list[Server] = [
        PostgresServer(name="postgres", state_dir=state_dir, port=ports["postgres"]),
        RedisServer(name="redis", state_dir=state_dir, port=ports["redis"]),
        AnvilServer(name="anvil", state_dir=state_dir, port=ports["anvil"], persist=persist_chain),
    ]
    return [s for s in candidates if not os.environ.get(EXTERNAL_URL_VARIABLES[s.name])]


@contextmanager
def running(servers: list[Server]) -> Iterator[dict[str, str]]:
    """Start servers in order; yield the URL variables to export; stop them in reverse."""
    started: list[Server] = []
    try:
        urls = {}
        for server in servers:
            server.start()
            started.append(server)
            urls[EXTERNAL_URL_VARIABLES[server.name]] = server.url
        yield urls
    finally:
        for server in reversed(started):
            server.stop()


def stack_environment(state_dir: Path, urls: dict[str, str], settings: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(urls)
    env["CARRACK_STATE_DIR"] = str(state_dir)
    env.setdefault("DJANGO_SETTINGS_MODULE", settings)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# One process for the one-off steps: Django starts once instead of three times.
PREPARE = """
import django
from django.core.management import call_command
django.setup()
call_command("migrate", interactive=False, verbosity=0)
call_command("chain_deploy")
call_command("demo_login")
"""


def prepare(env: dict[str, str]) -> list[str]:
    """Migrate, deploy the contracts (idempotent), ensure the demo login; return what they print."""
    result = subprocess.run([sys.executable, "-c", PREPARE], env=env, cwd=BASE_DIR,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"preparing the database and contracts failed:\n{result.stdout}{result.stderr}")
    return result.stdout.strip().splitlines()


def app_processes(state_dir: Path, env: dict[str, str], web_port: int,
                  dicom_port: int | None = None) -> list[AppProcess]:
    bin_dir = Path(sys.executable).parent
    return [
        AppProcess(
            name="web", state_dir=state_dir, port=web_port, env=env, needs=("postgres",),
            argv=[str(bin_dir / "gunicorn"), "config.wsgi:application",
                  "--bind", f"127.0.0.1:{web_port}", "--worker-class", "gthread", "--workers", "2",
                  "--threads", "4", "--timeout", "60",
                  # Path only: query strings carry search values (names, birth dates).
                  "--access-logfile", "-", "--access-logformat", ACCESS_LOG_FORMAT],
        ),
        AppProcess(
            name="worker", state_dir=state_dir, env=env, needs=("postgres", "redis"),
            argv=[str(bin_dir / "celery"), "-A", "config", "worker", "--loglevel", "INFO",
                  "--concurrency", "2", "--hostname", "worker@%h"],
        ),
        AppProcess(
            name="beat", state_dir=state_dir, env=env, needs=("redis",),
            argv=[str(bin_dir / "celery"), "-A", "config", "beat", "--loglevel", "INFO",
                  "--schedule", str(state_dir / "celerybeat-schedule")],
        ),
        *([] if dicom_port is None else [
            # The DICOM C-ECHO/C-STORE SCP (imaging.dimse); ready once its port accepts.
            AppProcess(
                name="dicom-scp", state_dir=state_dir, port=dicom_port, env=env, needs=("postgres",),
                argv=[sys.executable, str(BASE_DIR / "manage.py"), "dicom_scp", "--port", str(dicom_port)],
            ),
        ]),
    ]


def wait_healthy(url: str, processes: list[AppProcess], timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        for process in processes:
            if not process.is_running():
                raise StackError(f"{process.name} exited; see {process.log_path}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            last = json.load(error)
        except OSError:
            pass
        time.sleep(0.5)
    raise StackError(f"{url} did not report healthy in {timeout:.0f}s; last answer: {last}")


def run() -> int:
    """``make run``: the whole system on embedded defaults, in the foreground until Ctrl-C."""
    state_dir = Path(os.environ.get("CARRACK_STATE_DIR", BASE_DIR / "var")).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    ports = default_ports()
    # Installed explicitly: a shell that starts us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    started_at = time.monotonic()
    try:
        servers = embedded_servers(state_dir, ports, persist_chain=True)
        with running(servers) as urls:
            env = stack_environment(state_dir, urls, "config.settings.local")
            printed = prepare(env)
            deployed = next(line for line in printed if line.startswith("contracts:"))
            login = next(line for line in printed if line.startswith("demo login:"))
            processes = app_processes(state_dir, env, ports["web"], dicom_port=ports["dicom"])
            try:
                for process in processes:
                    process.start()
                base = f"http://127.0.0.1:{ports['web']}"
                wait_healthy(f"{base}/healthz", processes)
                _print_banner(base, state_dir, deployed, login, time.monotonic() - started_at,
                              dicom_port=ports["dicom"])
                Supervisor([*servers, *processes]).watch()
            finally:
                for process in reversed(processes):
                    process.stop()
    except KeyboardInterrupt:
        print("\nCarrack stopped; data kept in", state_dir)
        return 0
    except StackError as error:
        print(f"carrack: {error}", file=sys.stderr)
        return 1
    return 1


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _print_banner(base: str, state_dir: Path, deployed: str, login: str, seconds: float,
                  dicom_port: int | None = None) -> None:
    ae_title = os.environ.get("DICOM_AE_TITLE", "CARRACK")
    dicom = (f"  DICOM    {ae_title} at 127.0.0.1:{dicom_port} (C-STORE, C-ECHO), DICOMweb {base}/dicomweb/\n"
             if dicom_port else "")
    print(
        f"\nCarrack is up in {seconds:.1f}s (state in {state_dir}, logs in {state_dir / 'log'})\n"
        f"  health   {base}/healthz\n"
        f"  FHIR     {base}/fhir/\n"
        f"{dicom}"
        f"  API      {base}/api/schema/swagger-ui/\n"
        f"  admin    {base}/admin/\n"
        f"  {login}\n"
        f"  {deployed}\n"
        "Press Ctrl-C to stop.",
        flush=True,
    )


def test(pytest_args: list[str]) -> int:
    """``make test``: ephemeral servers in a temporary folder (unless named by URL), then pytest."""
    with tempfile.TemporaryDirectory(prefix="carrack-test-") as tmp:
        state_dir = Path(tmp)
        state_dir.chmod(0o755)
        ports = {name: free_port() for name in ("postgres", "redis", "anvil")}
        try:
            with running(embedded_servers(state_dir, ports, persist_chain=False)) as urls:
                env = stack_environment(state_dir, urls, "config.settings.test")
                env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
                command = [sys.executable, "-m", "pytest", *pytest_args]
                return subprocess.run(command, env=env, cwd=BASE_DIR).returncode
        except StackError as error:
            print(f"carrack: {error}", file=sys.stderr)
            return 1
