"""``GET /healthz`` against the real database, broker, worker and chain."""

from __future__ import annotations

import pytest

from config.stack.services import free_port
from ledger.chain import chain_client
from ledger.services import contracts_deploy

pytestmark = pytest.mark.django_db


def get_health(client):
    response = client.get("/healthz")
    return response.status_code, response.json()


def test_all_dependencies_up_gives_200_and_names_each(client, celery_worker, deployed):
    status, body = get_health(client)

    assert status == 200, body
    assert body["status"] == "up" and body["down"] == []
    checks = body["checks"]
    assert set(checks) == {"database", "broker", "worker", "chain", "contracts"}
    assert checks["database"]["vendor"] == "postgresql"
    assert checks["worker"]["workers"][0].startswith("test-worker@")
    assert checks["chain"]["chain_id"] == 31337
    assert checks["chain"]["latest_block"] >= 2
    assert checks["contracts"]["AuditAnchor"] == {
        "address": deployed["AuditAnchor"]["address"],
        "code_present": True,
    }


def test_chain_stopped_gives_503_naming_the_chain_then_200_after_restart(
    client, settings, celery_worker, deployments_file, anvil_node
):
    settings.CHAIN_RPC_URL = anvil_node.url
    deployed = contracts_deploy(
        client=chain_client(), names=settings.CHAIN_CONTRACTS,
        build_dir=settings.CONTRACTS_BUILD_DIR, registry=deployments_file,
    )
    assert get_health(client)[0] == 200

    anvil_node.stop()
    status, body = get_health(client)

    assert status == 503
    assert body["down"] == ["chain", "contracts"]
    assert body["checks"]["chain"]["status"] == "down"
    assert "unreachable" in body["checks"]["chain"]["error"]
    assert body["checks"]["database"]["status"] == "up"

    anvil_node.start()
    status, body = get_health(client)

    assert status == 200, body
    assert body["checks"]["contracts"]["AuditAnchor"]["address"] == deployed["AuditAnchor"]["address"]
    assert body["checks"]["contracts"]["AuditAnchor"]["code_present"] is True


def test_broker_down_gives_503_naming_broker_and_worker(client, settings, deployed):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"

    status, body = get_health(client)

    assert status == 503
    assert body["down"] == ["broker", "worker"]
    assert body["checks"]["worker"]["error"] == "broker down"


def test_no_worker_gives_503_naming_the_worker(client, settings, deployed, celery_worker):
    # A broker database no worker consumes: the broker answers, no worker does.
    settings.CELERY_BROKER_URL = settings.CELERY_BROKER_URL.rsplit("/", 1)[0] + "/9"

    status, body = get_health(client)

    assert status == 503
    assert body["down"] == ["worker"]
    assert body["checks"]["worker"]["error"] == "no worker answered"


def test_contract_missing_on_chain_gives_503_naming_contracts(client, settings, celery_worker,
                                                             deployments_file):
    deployments_file.write_text('{"31337": {"AuditAnchor": {"address": '
                                '"0x000000000000000000000000000000000000dEaD"}}}')

    status, body = get_health(client)

    assert status == 503
    assert body["down"] == ["contracts"]
    assert body["checks"]["contracts"]["AuditAnchor"]["code_present"] is False


def test_health_answers_json_to_post_with_405(client):
    response = client.post("/healthz")

    assert response.status_code == 405
