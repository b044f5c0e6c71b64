"""``carrack-stack run`` (what ``make run`` starts) from an empty state folder, twice.

The first start initialises PostgreSQL, Redis and anvil under the state folder, deploys
the contracts and reaches a healthy ``/healthz``; Ctrl-C stops every child; the second
start finds the same contract, the same on-chain anchor and the same database rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from config.stack.services import BASE_DIR, free_port, port_is_open
from ledger.chain import load_artifact
from ledger.chain.web3_client import Web3ChainClient
from django.conf import settings

CLEARED = ("DATABASE_URL", "REDIS_URL", "CHAIN_RPC_URL", "CHAIN_DEPLOYMENTS_FILE",
           "DJANGO_SETTINGS_MODULE", "CARRACK_STATE_DIR")


@pytest.fixture
def stack(tmp_path):
    ports = {name: free_port() for name in ("WEB", "PG", "REDIS", "CHAIN", "DICOM")}
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update({f"CARRACK_{name}_PORT": str(port) for name, port in ports.items()})
    env["CARRACK_STATE_DIR"] = str(tmp_path / "var")
    processes = []

    def start():
        process = subprocess.Popen([sys.executable, "-m", "config.stack.cli", "run"], cwd=BASE_DIR,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        started = time.monotonic()
        health = wait_healthy(process, ports["WEB"])
        elapsed = time.monotonic() - started
        banner = read_banner(process)
        return process, health, elapsed, banner

    start.ports = ports
    start.state_dir = tmp_path / "var"
    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()


def wait_healthy(process, port, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"carrack-stack run exited:\n{process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                return json.load(response)
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    pytest.fail("the stack did not become healthy")


def read_banner(process) -> str:
    """The supervisor prints its banner right after it sees the stack healthy."""
    lines = []
    while not lines or lines[-1] != "Press Ctrl-C to stop.":
        line = process.stdout.readline()
        if not line:
            pytest.fail("carrack-stack run ended before its banner:\n" + "\n".join(lines))
        lines.append(line.rstrip("\n"))
    return "\n".join(lines)


def interrupt(process):
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=90)
    return process.returncode, output


class FhirSession:
    """The README quickstart: the demo user's bearer token from the banner, against /fhir."""

    def __init__(self, port: int, banner: str) -> None:
        self.base = f"http://127.0.0.1:{port}/fhir"
        token = banner.split("Authorization: Bearer ")[1].split(")")[0]
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}

    def post(self, path: str, resource: dict) -> dict:
        request = urllib.request.Request(f"{self.base}/{path}", data=json.dumps(resource).encode(),
                                         headers=self.headers, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
            return json.load(response)

    def get(self, path: str) -> dict:
        request = urllib.request.Request(f"{self.base}/{path}", headers=self.headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)


def wait_anchored(port: int, timeout: float = 60) -> int:
    """The stack's own beat task anchors the audit log; the last seq it confirmed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=carrack") as conn:
            last = conn.execute("SELECT max(last_seq) FROM ledger_anchorbatch WHERE status = 'confirmed'"
                                ).fetchone()[0]
        if last:
            return last
        time.sleep(1)
    pytest.fail("the audit log was not anchored by the running stack")


def database_rows(port):
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=carrack") as conn:
        return {
            "migrations": conn.execute("SELECT count(*) FROM django_migrations").fetchone()[0],
            "users": conn.execute("SELECT id, username, password FROM auth_user").fetchall(),
            "groups": conn.execute("SELECT name FROM auth_group").fetchall(),
        }


def test_run_twice_keeps_contracts_chain_state_and_rows(stack):
    process, health, _, banner = stack()
    assert health["status"] == "up"
    address = health["checks"]["contracts"]["AuditAnchor"]["address"]
    assert "demo login: demo / " in banner and f"AuditAnchor {address}" in banner
    fhir = FhirSession(stack.ports["WEB"], banner)
    created = fhir.post("Patient", {"resourceType": "Patient", "name": [{"family": "Persisted"}]})
    anchored_to = wait_anchored(stack.ports["PG"])
    chain = Web3ChainClient(rpc_url=f"http://127.0.0.1:{stack.ports['CHAIN']}",
                            private_key=settings.ANVIL_DEFAULT_PRIVATE_KEYS[0])
    artifact = load_artifact("AuditAnchor", settings.CONTRACTS_BUILD_DIR)
    with psycopg.connect(f"host=127.0.0.1 port={stack.ports['PG']} user=postgres dbname=carrack") as conn:
        conn.execute("INSERT INTO auth_group (name) VALUES ('persistence-check')")
    rows = database_rows(stack.ports["PG"])

    returncode, output = interrupt(process)

    assert returncode == 0, output
    assert "Carrack stopped" in output
    assert not any(port_is_open(port) for port in stack.ports.values())

    process, health, seconds, second_banner = stack()

    assert health["checks"]["contracts"]["AuditAnchor"] == {"address": address, "code_present": True}
    assert chain.call(artifact, address, "lastAnchored", chain.address) >= anchored_to
    assert database_rows(stack.ports["PG"]) == rows
    assert fhir.get(f"Patient/{created['id']}") == created
    assert second_banner.split("demo login:")[1] == banner.split("demo login:")[1]
    print(f"warm start to healthy: {seconds:.1f}s")
    assert interrupt(process)[0] == 0


def test_a_taken_port_is_reported_without_a_traceback(stack, tmp_path):
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", stack.ports["REDIS"]))
        blocker.listen()
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env.update({f"CARRACK_{n}_PORT": str(p) for n, p in stack.ports.items()})
        env["CARRACK_STATE_DIR"] = str(tmp_path / "var")
        result = subprocess.run([sys.executable, "-m", "config.stack.cli", "run"], cwd=BASE_DIR,
                                env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 1
    assert f"redis: port {stack.ports['REDIS']} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not port_is_open(stack.ports["PG"])


def test_the_web_access_log_has_no_query_strings(stack):
    process, _, _, banner = stack()
    fhir = FhirSession(stack.ports["WEB"], banner)

    fhir.get("Patient?family=Nightingale&birthdate=1820-05-12")
    interrupt(process)

    log = (stack.state_dir / "log" / "web.log").read_text()
    assert '"GET /fhir/Patient" 200' in log
    assert "Nightingale" not in log and "1820" not in log
