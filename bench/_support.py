"""Shared pieces of the FHIR benchmarks: Synthea data, Django setup, gunicorn, timing tables.

Not a benchmark itself. Every script runs against the PostgreSQL named by ``--database-url``
(default ``postgres://postgres@127.0.0.1:5432/carrack_bench``), which must already be migrated:

    createdb -h 127.0.0.1 -U postgres carrack_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/carrack_bench \
        DJANGO_SETTINGS_MODULE=config.settings.test .venv/bin/python manage.py migrate
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/carrack_bench"
CACHE_DIR = Path(os.environ.get("CARRACK_BENCH_CACHE", "/tmp/carrack-bench"))
SETTINGS = "config.settings.test"


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    return parser


def django_setup(database_url: str) -> None:
    """Configure Django on the benchmark database (the test settings: no debug, no embedded servers)."""
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS)
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()


def synthea_bundles(patients: int, seed: int) -> list[Path]:
    """Transaction Bundles for ``patients`` Synthea patients, generated once and cached."""
    folder = CACHE_DIR / f"synthea-p{patients}-s{seed}-r20250101"
    bundles = sorted((folder / "output" / "fhir").glob("*.json"))
    if bundles:
        return bundles
    folder.mkdir(parents=True, exist_ok=True)
    synthea = Path(sys.executable).parent / "synthea"
    subprocess.run([str(synthea), "-p", str(patients), "-s", str(seed), "-r", "20250101"], cwd=folder, check=True,
                   stdout=subprocess.DEVNULL)
    return sorted((folder / "output" / "fhir").glob("*.json"))


def api_token(organization_id: str = "bench-hospital") -> str:
    """An OAuth2 ``system/*.cruds`` token of an integration user of ``organization_id`` (made once)."""
    from django.contrib.auth import get_user_model
    from oauth2_provider.models import Application

    from access.models import AccessProfile, Role
    from access.services import client_ensure, token_ensure

    user, _ = get_user_model().objects.get_or_create(username="bench")
    AccessProfile.objects.get_or_create(user=user, defaults={"role": Role.INTEGRATION,
                                                             "organization_id": organization_id})
    client = client_ensure(name="bench-client", owner=user, client_type=Application.CLIENT_CONFIDENTIAL,
                           grant_type=Application.GRANT_CLIENT_CREDENTIALS, scopes="system/*.cruds")
    return token_ensure(user=None, application=client, scope="system/*.cruds").token


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """``config.wsgi`` under gunicorn on a free 127.0.0.1 port, for the life of a ``with`` block."""

    def __init__(self, database_url: str, *, workers: int = 2, worker_class: str = "sync",
                 threads: int = 1, conn_max_age: int = 0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        url = database_url + (f"?conn_max_age={conn_max_age}" if conn_max_age else "")
        self.env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": SETTINGS}
        self.argv = [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application",
                     "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
                     "--worker-class", worker_class, "--threads", str(threads),
                     "--timeout", "300", "--log-level", "warning"]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Gunicorn:
        self.process = subprocess.Popen(self.argv, cwd=BASE_DIR, env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/fhir/metadata", timeout=2)
                return self
            except urllib.error.HTTPError:  # answering, if only with 401
                return self
            except OSError:
                time.sleep(0.3)
        self.__exit__()
        raise RuntimeError("gunicorn did not answer in 60 s")

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table, printed as is and pasted into docs/benchmarks.md."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
