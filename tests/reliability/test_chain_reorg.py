"""Anchoring and consent tokens survive a chain that loses blocks (issue 12).

Real PostgreSQL and an anvil of each test's own, never the session's: blocks are lost either
deterministically (``evm_snapshot`` / ``evm_revert`` drop every block mined since the
snapshot, as a reorganization does) or for real (anvil killed with SIGKILL after a batch was
counted confirmed, before it saved its state, then restarted from its state file). Blocks for
confirmations are mined with ``evm_mine`` (anvil mines only per transaction).
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests
from django.core.management import CommandError, call_command

from config.health import check_anchoring
from config.stack.services import AnvilServer, free_port
from ledger.anchoring import anchor_tick
from ledger.chain import consent_client, load_artifact
from ledger.chain.web3_client import Web3ChainClient
from ledger.consents.check import consent_check
from ledger.consents.reconcile import consent_reconcile
from ledger.consents.sync import consent_sync
from ledger.models import AnchorBatch, ConsentChainTx, ConsentToken
from ledger.services import audit_append
from tests.consent.test_consent_tokens import B, consent_body, grant, read_as_b, world  # noqa: F401
from tests.ledger.conftest import configure_anchoring, deploy_anchor, own_chain  # noqa: F401
from tests.ledger.test_anchoring import assert_anchored_exactly_once

pytestmark = [pytest.mark.chain, pytest.mark.django_db(transaction=True)]

CONFIRMATIONS = 2  # the default (config/settings/base.py); the test settings use 1


@pytest.fixture(autouse=True)
def reorg_settings(settings):
    configure_anchoring(settings, max_entries=5)
    settings.AUDIT_ANCHOR_CONFIRMATIONS = CONFIRMATIONS
    settings.CONSENT_CONFIRMATIONS = CONFIRMATIONS
    settings.AUDIT_ANCHOR_LAG_ALERT_SECONDS = 1.0
    return settings


def rpc(url: str, method: str, *params):
    answer = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
                           timeout=5).json()
    assert "error" not in answer, answer
    return answer["result"]


def append(count: int) -> None:
    for n in range(count):
        audit_append(event={"resourceType": "AuditEvent", "n": n}, patient_id=None, agent="tester", outcome="0")


def anchor_all(client, url: str, *, timeout: float = 60.0) -> list:
    """Tick (mining a block whenever a batch waits for confirmations) until nothing is open."""
    reports, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = anchor_tick(client=client)
        reports.append(report)
        assert report.conflict is None and report.unavailable is None, report
        if not AnchorBatch.objects.exclude(status="confirmed").exists() and not report.created:
            return reports
        rpc(url, "evm_mine")
    pytest.fail(f"not anchored in {timeout} s: {list(AnchorBatch.objects.values_list('first_seq', 'status'))}")


def assert_in_order(batch: AnchorBatch) -> None:
    assert batch.created <= batch.sent_at <= batch.confirmed_at, batch
    if batch.lost_at:
        assert batch.created <= batch.lost_at <= batch.sent_at, batch


# --- anchoring ---------------------------------------------------------------------------------

def test_batches_lost_in_a_reorg_are_re_anchored_once_in_order(own_chain, anvil_node, client, settings):  # noqa: F811
    artifact = load_artifact("AuditAnchor", settings.CONTRACTS_BUILD_DIR)
    address = deploy_anchor(own_chain, settings.CHAIN_DEPLOYMENTS_FILE)
    append(5)
    anchor_all(own_chain, anvil_node.url)
    snapshot = rpc(anvil_node.url, "evm_snapshot")
    append(10)
    anchor_all(own_chain, anvil_node.url)
    assert list(AnchorBatch.objects.order_by("first_seq").values_list("first_seq", "status")) == [
        (1, "confirmed"), (6, "confirmed"), (11, "confirmed")]
    lost_hashes = list(AnchorBatch.objects.filter(first_seq__gt=1).values_list("tx_hash", flat=True))

    rpc(anvil_node.url, "evm_revert", snapshot)  # the blocks of batches 6..10 and 11..15 are gone

    with pytest.raises(CommandError, match=r"batch 6\.\.10: on chain, .* run manage.py ledger_reanchor"):
        call_command("ledger_verify", stdout=open(os.devnull, "w"))  # noqa: SIM115
    found = anchor_tick(client=own_chain)
    assert (found.lost, found.moved) == ([(6, 10), (11, 15)], [])
    time.sleep(1.1)
    health = client.get("/healthz")
    assert health.status_code == 503 and "anchoring" in health.json()["down"]
    lag = health.json()["anchoring"]
    assert (lag["status"], lag["unanchored_entries"], lag["lost_batches"]) == ("down", 10, 1)
    assert lag["lag_seconds"] > 1

    anchor_all(own_chain, anvil_node.url)

    assert_anchored_exactly_once(own_chain, artifact, address, 15)
    call_command("ledger_verify", stdout=open(os.devnull, "w"))  # noqa: SIM115
    assert check_anchoring()["status"] == "up" and check_anchoring()["unanchored_entries"] == 0
    rows = list(AnchorBatch.objects.order_by("first_seq"))
    assert [b.reorgs for b in rows] == [0, 1, 1]
    for batch in rows:
        assert_in_order(batch)
    assert all(h in rows[i + 1].replaced_tx_hashes or rows[i + 1].tx_hash == h
               for i, h in enumerate(lost_hashes))


def test_a_batch_mined_again_in_another_block_gets_that_block(own_chain, anvil_node, settings):  # noqa: F811
    append(5)
    anchor_all(own_chain, anvil_node.url)
    snapshot = rpc(anvil_node.url, "evm_snapshot")
    append(5)
    anchor_all(own_chain, anvil_node.url)
    batch = AnchorBatch.objects.get(first_seq=6)
    rpc(anvil_node.url, "evm_revert", snapshot)
    rpc(anvil_node.url, "evm_mine")  # the chain moves on: the same bytes land in another block
    own_chain.send_raw(bytes(batch.raw_tx))

    reports = anchor_all(own_chain, anvil_node.url)

    assert (reports[0].lost, reports[0].moved) == ([], [(6, 10)])
    again = AnchorBatch.objects.get(first_seq=6)
    assert (again.tx_hash, again.status) == (batch.tx_hash, "confirmed")
    assert again.block_hash != batch.block_hash
    assert again.block_hash == own_chain.receipt(batch.tx_hash)["block_hash"]
    call_command("ledger_verify", stdout=open(os.devnull, "w"))  # noqa: SIM115


class QuietAnvil(AnvilServer):
    """anvil that saves its state only when stopped cleanly: a kill -9 loses every block since."""

    def command(self) -> list[str]:
        argv = super().command()
        argv[argv.index("--state-interval") + 1] = "3600"
        return argv


def test_anvil_killed_right_after_a_confirmation_re_anchors_and_verifies(tmp_path, settings, deployments_file):
    node = QuietAnvil(name="anvil", state_dir=tmp_path, port=free_port(), persist=True)
    node.start()
    try:
        settings.CHAIN_RPC_URL = node.url
        chain = Web3ChainClient(rpc_url=node.url, private_key=settings.CHAIN_PRIVATE_KEY, timeout=1.0)
        artifact = load_artifact("AuditAnchor", settings.CONTRACTS_BUILD_DIR)
        address = deploy_anchor(chain, deployments_file)
        append(5)
        anchor_all(chain, node.url)
        node.stop()  # a clean stop saves the state: batch 1..5 survives
        node.start()
        append(5)
        anchor_all(chain, node.url)  # batch 6..10 counted confirmed ...
        os.killpg(node.process.pid, signal.SIGKILL)  # ... and anvil dies before saving it
        node.process.wait(10)
        restarted = time.monotonic()
        node.start()
        assert chain.call(artifact, address, "lastAnchored", chain.address) == 5

        reports = anchor_all(chain, node.url)
        call_command("ledger_verify", stdout=open(os.devnull, "w"))  # noqa: SIM115
        recovered = time.monotonic() - restarted

        assert reports[0].lost == [(6, 10)]
        assert_anchored_exactly_once(chain, artifact, address, 10)
        print(f"\nanvil kill -9: 10 entries appended, 10 anchored exactly once, 1 batch lost and "
              f"re-anchored, {recovered:.2f} s from restart to ledger_verify ok")
    finally:
        node.stop()


def test_ledger_reanchor_repairs_what_the_chain_lost(own_chain, anvil_node, settings):  # noqa: F811
    append(5)
    snapshot = rpc(anvil_node.url, "evm_snapshot")
    anchor_all(own_chain, anvil_node.url)
    rpc(anvil_node.url, "evm_revert", snapshot)
    settings.AUDIT_ANCHOR_CONFIRMATIONS = 1  # the command waits for confirmations; nobody mines here

    with pytest.raises(CommandError, match=r"batch 1\.\.5: on chain, transaction 0x\w+ is not on the chain"):
        call_command("ledger_verify", stdout=open(os.devnull, "w"))  # noqa: SIM115
    out = open(os.path.join(settings.CHAIN_DEPLOYMENTS_FILE.parent, "out.txt"), "w+")  # noqa: SIM115
    call_command("ledger_reanchor", "--timeout", "30", stdout=out)

    out.seek(0)
    text = out.read()
    assert "batch 1..5: no longer on chain as confirmed, re-anchoring" in text
    assert "ok: 1 batches re-anchored" in text
    call_command("ledger_verify", stdout=open(os.devnull, "w"))  # noqa: SIM115


# --- consent tokens ----------------------------------------------------------------------------

def sync_mined() -> None:
    """Consent ticks (mining blocks for the confirmations) until nothing is in flight."""
    for _ in range(10):
        report = consent_sync(client=consent_client())
        assert report.unavailable is None and not report.failed, report
        if not ConsentChainTx.objects.exclude(status__in=("mined",)).exists() and \
                not ConsentToken.objects.filter(status="pending").exists():
            return
        rpc(consent_client_url(), "evm_mine")
    pytest.fail("consent transactions still in flight")


def consent_client_url() -> str:
    from django.conf import settings

    return settings.CHAIN_RPC_URL


def test_a_consent_grant_and_revoke_lost_in_a_reorg_fail_closed_and_are_sent_again(
        world, anvil_node, settings):  # noqa: F811
    settings.CHAIN_RPC_URL = anvil_node.url
    call_command("chain_deploy", stdout=open(os.devnull, "w"))  # noqa: SIM115
    before_grant = rpc(anvil_node.url, "evm_snapshot")
    first = grant(world)
    sync_mined()
    token = ConsentToken.objects.get()
    assert token.status == "active" and read_as_b(world).status_code == 200

    rpc(anvil_node.url, "evm_revert", before_grant)  # the grant's blocks are gone
    report = consent_sync(client=consent_client())

    assert report.lost == 1
    token.refresh_from_db()
    assert token.status == "pending" and token.grant_block is None
    assert consent_check(patient_id=world["patient"], grantee=f"Organization/{B}", purpose="TREAT") is None
    assert read_as_b(world).status_code == 404  # fail closed while it is not on chain
    sync_mined()
    token.refresh_from_db()
    assert token.status == "active" and read_as_b(world).status_code == 200
    assert consent_reconcile(client=consent_client()) == []

    before_revoke = rpc(anvil_node.url, "evm_snapshot")
    world["patient_user"].put(f"/fhir/Consent/{first['id']}",
                              {**consent_body(world["patient"], status="inactive"), "id": first["id"]})
    sync_mined()
    rpc(anvil_node.url, "evm_revert", before_revoke)  # the revoke's blocks are gone: active on chain
    report = consent_sync(client=consent_client())

    assert report.lost == 1
    token.refresh_from_db()
    assert token.status == "revoked" and read_as_b(world).status_code == 404  # still refused
    sync_mined()
    assert consent_reconcile(client=consent_client()) == []
    *_, status = consent_client().call(
        load_artifact("ConsentRegistry", settings.CONTRACTS_BUILD_DIR), token.contract, "tokenState",
        int(token.token_id, 16))
    assert status == 2  # revoked on chain again
