"""Shared fixtures: the real servers started by ``carrack-stack test`` plus per-test ones.

``make test`` starts PostgreSQL, Redis and anvil in a temporary folder and exports their
URLs; these fixtures add what a test needs on top: a Celery worker process, a freshly
deployed contract, or an anvil node of its own that the test may stop and restart.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from config.stack.services import BASE_DIR, AnvilServer, free_port
from ledger.chain import chain_client, consent_client, load_artifact
from ledger.services import contracts_deploy

# anvil's second default account: a non-member for role tests (public development key).
OUTSIDER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"


@pytest.fixture(scope="session")
def chain():
    return chain_client()


@pytest.fixture(scope="session")
def audit_anchor_artifact():
    return load_artifact("AuditAnchor", settings.CONTRACTS_BUILD_DIR)


@pytest.fixture
def deployments_file(tmp_path, settings) -> Path:
    """A registry of deployed addresses private to this test."""
    settings.CHAIN_DEPLOYMENTS_FILE = tmp_path / "deployments.json"
    return settings.CHAIN_DEPLOYMENTS_FILE


@pytest.fixture
def deployed(chain, deployments_file) -> dict[str, dict]:
    """Contracts deployed for this test on the session's anvil."""
    return contracts_deploy(
        client=chain,
        names=settings.CHAIN_CONTRACTS,
        build_dir=settings.CONTRACTS_BUILD_DIR,
        registry=deployments_file,
        consent_member=consent_client().address,
    )


@pytest.fixture
def anvil_node(tmp_path):
    """An anvil of this test's own, with a state file, that the test may stop and restart."""
    node = AnvilServer(name="anvil", state_dir=tmp_path, port=free_port(), persist=True)
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def celery_worker():
    """A real Celery worker process consuming the test broker."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings.test")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo",
         "--hostname", "test-worker@%h", "--loglevel", "WARNING"],
        cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    from config.celery import app

    deadline = time.monotonic() + 60
    while not app.control.ping(timeout=0.5, limit=1):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("the Celery worker did not start")
    yield process
    process.terminate()
    process.wait(20)
