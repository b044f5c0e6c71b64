"""One source of configuration: a hand-run command with the stack's environment reaches that stack.

A second stack runs on free ports (not 55432/56379/8545) under its own state folder. With only
``CARRACK_STATE_DIR`` and ``CARRACK_*_PORT`` set, as an operator would export them, the
settings of ``manage.py`` and ``celery`` derive the same URLs as the supervisor did.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from config.stack.addresses import DEFAULT_PORTS
from config.stack.services import BASE_DIR

PRINT_SETTINGS = (
    "import json; from django.conf import settings as s; print(json.dumps({"
    "'db_port': s.DATABASES['default']['PORT'], 'redis': s.REDIS_URL, 'broker': s.CELERY_BROKER_URL, "
    "'chain': s.CHAIN_RPC_URL, 'deployments': str(s.CHAIN_DEPLOYMENTS_FILE)}))"
)


@pytest.fixture(scope="module")
def stack_environment() -> dict[str, str]:
    # A batch as soon as there is an entry: the test needs one anchored batch to verify.
    return {"AUDIT_ANCHOR_INTERVAL_SECONDS": "1"}


def hand_run(stack, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A command as an operator types it: the stack's state folder and ports, no URL variables."""
    env = {k: v for k, v in stack.env.items() if not k.endswith("_URL")}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py's own default (config.settings.local)
    return subprocess.run(list(argv), cwd=BASE_DIR, env=env, capture_output=True, text=True,
                          timeout=timeout)


def counts(stack) -> tuple[int, int]:
    with psycopg.connect(stack.pg_dsn) as conn:
        entries = conn.execute("SELECT count(*) FROM ledger_auditentry WHERE seq IS NOT NULL").fetchone()[0]
        batches = conn.execute("SELECT count(*) FROM ledger_anchorbatch WHERE status = 'confirmed'"
                               ).fetchone()[0]
    return entries, batches


def wait_for_a_confirmed_batch(stack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while counts(stack)[1] == 0:
        if time.monotonic() > deadline:
            pytest.fail("the stack's beat anchored nothing")
        time.sleep(1)


def test_settings_of_a_hand_run_manage_py_name_the_stacks_servers(stack):
    result = hand_run(stack, sys.executable, "manage.py", "shell", "-c", PRINT_SETTINGS)

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {
        "db_port": stack.ports["PG"],
        "redis": f"redis://127.0.0.1:{stack.ports['REDIS']}/0",
        "broker": f"redis://127.0.0.1:{stack.ports['REDIS']}/0",
        "chain": f"http://127.0.0.1:{stack.ports['CHAIN']}",
        "deployments": str(stack.state_dir / "chain" / "deployments.json"),
    }
    assert stack.ports["PG"] != DEFAULT_PORTS["postgres"]


def test_a_hand_run_ledger_verify_checks_that_stacks_audit_log_and_chain(stack):
    request = urllib.request.Request(
        f"{stack.base}/fhir/Patient", method="POST",
        data=json.dumps({"resourceType": "Patient", "name": [{"family": "Handrun"}]}).encode(),
        headers={"Authorization": f"Bearer {stack.token}", "Content-Type": "application/fhir+json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
    wait_for_a_confirmed_batch(stack)
    before = counts(stack)

    result = hand_run(stack, sys.executable, "manage.py", "ledger_verify")

    after = counts(stack)
    assert result.returncode == 0, result.stderr
    entries, batches = (int(word) for word in result.stdout.split()[1:4:2])
    assert before[0] <= entries <= after[0] and before[1] <= batches <= after[1], result.stdout
    assert batches >= 1  # each batch's Anchored event was found on this stack's anvil


def test_a_hand_run_celery_reaches_the_stacks_broker_and_worker(stack):
    result = hand_run(stack, str(Path(sys.executable).parent / "celery"), "-A", "config",
                      "inspect", "ping", "--timeout", "5")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "pong" in result.stdout
