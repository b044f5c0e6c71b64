"""Anchoring the audit log: real PostgreSQL, real anvil, no mocks.

Tests that stop the chain or switch its mining off run an anvil of their own
(``anvil_node``); the others use the session's node with a freshly deployed contract.
Time is passed to ``anchor_tick`` as ``now``, so resend and replacement timeouts need
no sleeping.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import psycopg
import pytest
import requests
from django.conf import settings
from django.db import connection
from django.utils import timezone

from ledger.anchoring import ANCHOR_LOCK, anchor_tick
from ledger.chain import chain_client
from ledger.chain.web3_client import Web3ChainClient
from ledger.models import AnchorBatch, AuditEntry
from ledger.selectors import audit_range_leaves
from ledger.services import audit_append
from ledger.tasks import anchor_audit
from ledger.verify import audit_format, merkle

from tests.ledger.conftest import configure_anchoring

pytestmark = [pytest.mark.chain, pytest.mark.django_db(transaction=True)]

RESEND = 30


@pytest.fixture(autouse=True)
def anchoring_settings(settings):
    configure_anchoring(settings, max_entries=1000)
    return settings


def append(count: int) -> None:
    for n in range(count):
        audit_append(event={"resourceType": "AuditEvent", "n": n}, patient_id=None,
                     agent="tester", outcome="0")


def rpc(node, method: str, *params):
    """A JSON-RPC call to an anvil (``node``: an AnvilServer or a URL)."""
    answer = requests.post(getattr(node, "url", node), json={"jsonrpc": "2.0", "id": 1, "method": method,
                                           "params": list(params)}, timeout=5).json()
    assert "error" not in answer, answer
    return answer["result"]


def contract_of(client) -> str:
    return AnchorBatch.objects.values_list("contract", flat=True).first()


def onchain(client, artifact, address) -> list[tuple[int, int, bytes, str]]:
    events = client.events(artifact, address, "Anchored", member=client.address)
    return [(e["args"]["firstSeq"], e["args"]["lastSeq"], e["args"]["root"], e["transaction"])
            for e in events]


def batches() -> list[AnchorBatch]:
    return list(AnchorBatch.objects.order_by("first_seq"))


def assert_anchored_exactly_once(client, artifact, address, total: int) -> None:
    """DB batches and on-chain events both tile 1..total, agree, and every entry is in one."""
    rows = batches()
    assert [b.status for b in rows] == ["confirmed"] * len(rows)
    assert [(b.first_seq, b.last_seq) for b in rows] == _tiling(rows, total)
    events = onchain(client, artifact, address)
    assert [(f, last, r, tx) for f, last, r, tx in events] == [
        (b.first_seq, b.last_seq, bytes(b.root), b.tx_hash) for b in rows
    ]
    assert client.call(artifact, address, "historyOf", client.address) == [
        total, len(rows),
        audit_format.history_accumulator(address, client.address,
                                   [(b.first_seq, b.last_seq, bytes(b.root)) for b in rows])]
    for b in rows:
        assert bytes(b.root) == merkle.root(audit_range_leaves(first_seq=b.first_seq,
                                                               last_seq=b.last_seq))
        assert set(b.entries.values_list("seq", flat=True)) == set(range(b.first_seq, b.last_seq + 1))
    assert AuditEntry.objects.filter(batch__isnull=True).count() == 0
    assert AuditEntry.objects.count() == total


def _tiling(rows, total):
    """The expected contiguous ranges: each starts right after the previous one, ending at total."""
    expected, first = [], 1
    for b in rows:
        expected.append((first, b.last_seq))
        first = b.last_seq + 1
    assert first == total + 1
    return expected


# --- the port's raw-transaction methods --------------------------------------------------------

def test_send_raw_again_returns_the_hash_before_and_after_mining(chain, deployed,
                                                                 audit_anchor_artifact):
    address = deployed["AuditAnchor"]["address"]
    max_fee, priority = chain.fee_suggestion()
    signed = chain.signed_call(audit_anchor_artifact, address, "anchor", 1, 1, b"\x01" * 32,
                               nonce=chain.nonce(chain.address, pending=True),
                               max_fee_per_gas=max_fee, max_priority_fee_per_gas=priority)

    assert chain.send_raw(signed.raw) == signed.tx_hash
    assert chain.send_raw(signed.raw) == signed.tx_hash  # mined by now: "nonce too low"

    receipt = chain.receipt(signed.tx_hash)
    assert (receipt["status"], receipt["logs"], receipt["transaction"]) == (1, 1, signed.tx_hash)
    assert chain.receipt("0x" + "00" * 32) is None
    assert chain.call(audit_anchor_artifact, address, "lastAnchored", chain.address) == 1


# --- building batches ----------------------------------------------------------------------------

def test_batches_are_contiguous_non_overlapping_and_match_the_chain(chain, deployed,
                                                                    audit_anchor_artifact,
                                                                    anchoring_settings):
    anchoring_settings.AUDIT_ANCHOR_MAX_ENTRIES = 10
    address = deployed["AuditAnchor"]["address"]
    append(25)

    report = anchor_tick(client=chain)

    assert report.sequenced == 25
    assert report.created == [(1, 10), (11, 20), (21, 25)]
    assert report.confirmed == [(1, 10), (11, 20), (21, 25)]
    assert (report.unavailable, report.conflict) == (None, None)
    assert_anchored_exactly_once(chain, audit_anchor_artifact, address, 25)

    append(3)
    assert anchor_tick(client=chain).confirmed == [(26, 28)]
    assert_anchored_exactly_once(chain, audit_anchor_artifact, address, 28)


def test_a_small_range_waits_for_the_interval(chain, deployed, audit_anchor_artifact,
                                              anchoring_settings):
    anchoring_settings.AUDIT_ANCHOR_INTERVAL_SECONDS = 3600
    anchoring_settings.AUDIT_ANCHOR_MAX_ENTRIES = 10
    address = deployed["AuditAnchor"]["address"]
    append(5)

    report = anchor_tick(client=chain)

    assert (report.sequenced, report.created, report.sent) == (5, [], [])
    assert AnchorBatch.objects.count() == 0
    assert chain.call(audit_anchor_artifact, address, "lastAnchored", chain.address) == 0

    later = anchor_tick(client=chain, now=timezone.now() + timedelta(seconds=3601))
    assert later.confirmed == [(1, 5)]
    assert_anchored_exactly_once(chain, audit_anchor_artifact, address, 5)


def test_entries_count_as_anchored_only_after_the_configured_confirmations(
        chain, deployed, audit_anchor_artifact, anchoring_settings):
    anchoring_settings.AUDIT_ANCHOR_CONFIRMATIONS = 2
    append(3)

    mined = anchor_tick(client=chain)

    assert (mined.created, mined.confirmed) == ([(1, 3)], [])
    batch = AnchorBatch.objects.get()
    assert (batch.status, batch.block_number, batch.confirmed_at) == ("sent", None, None)
    assert chain.receipt(batch.tx_hash)["status"] == 1

    rpc(settings.CHAIN_RPC_URL, "evm_mine")
    assert anchor_tick(client=chain).confirmed == [(1, 3)]
    batch.refresh_from_db()
    assert batch.block_number == chain.receipt(batch.tx_hash)["block_number"]
    assert_anchored_exactly_once(chain, audit_anchor_artifact, deployed["AuditAnchor"]["address"], 3)


def test_a_tick_is_busy_while_another_holds_the_lock(chain, deployed):
    append(3)
    with psycopg.connect(**connection.get_connection_params()) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [ANCHOR_LOCK])

        report = anchor_tick(client=chain)

    assert report.busy is True
    assert (report.sequenced, report.created) == (0, [])
    assert AnchorBatch.objects.count() == 0
    assert AuditEntry.objects.filter(seq__isnull=False).count() == 0


def test_concurrent_ticks_never_double_anchor_or_leave_a_gap(chain, deployed,
                                                             audit_anchor_artifact,
                                                             anchoring_settings):
    anchoring_settings.AUDIT_ANCHOR_MAX_ENTRIES = 7
    address = deployed["AuditAnchor"]["address"]
    start, reports, errors = threading.Barrier(4), [], []

    def worker() -> None:
        try:
            client = chain_client()
            start.wait()
            for _ in range(6):
                append(5)
                reports.append(anchor_tick(client=client))
        except Exception as error:  # surfaced below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    final = anchor_tick(client=chain)

    assert errors == []
    assert final.busy is False and final.conflict is None
    assert all(r.unavailable is None and r.conflict is None for r in reports)
    assert_anchored_exactly_once(chain, audit_anchor_artifact, address, 4 * 6 * 5)


def test_a_range_the_chain_already_holds_differently_is_a_conflict(chain, deployed,
                                                                    audit_anchor_artifact):
    address = deployed["AuditAnchor"]["address"]
    chain.transact(audit_anchor_artifact, address, "anchor", 1, 1, b"\x99" * 32)
    append(2)

    report = anchor_tick(client=chain)

    assert "Overlap" in report.conflict
    assert AnchorBatch.objects.count() == 0
    assert AuditEntry.objects.filter(batch__isnull=False).count() == 0
    assert chain.call(audit_anchor_artifact, address, "lastAnchored", chain.address) == 1


def test_the_celery_task_runs_a_tick(chain, deployed, audit_anchor_artifact):
    append(4)

    result = anchor_audit.apply().get()

    assert result["confirmed"] == [(1, 4)]
    assert settings.CELERY_BEAT_SCHEDULE["ledger.anchor_audit"]["task"] == "ledger.anchor_audit"
    assert_anchored_exactly_once(chain, audit_anchor_artifact, deployed["AuditAnchor"]["address"], 4)


# --- the chain going away --------------------------------------------------------------------

def test_chain_down_then_back_anchors_all_500_exactly_once(anvil_node, own_chain,
                                                           audit_anchor_artifact,
                                                           anchoring_settings):
    anchoring_settings.AUDIT_ANCHOR_MAX_ENTRIES = 200
    anvil_node.stop()
    append(500)

    down = [anchor_tick(client=own_chain) for _ in range(2)]

    assert all(r.unavailable and r.created == [] and r.confirmed == [] for r in down)
    assert AuditEntry.objects.count() == 500
    assert AuditEntry.objects.filter(seq__isnull=False).count() == 500
    assert AnchorBatch.objects.count() == 0

    anvil_node.start()
    up = anchor_tick(client=own_chain)

    assert up.unavailable is None
    assert up.confirmed == [(1, 200), (201, 400), (401, 500)]
    assert anchor_tick(client=own_chain).created == []
    address = contract_of(own_chain)
    assert_anchored_exactly_once(own_chain, audit_anchor_artifact, address, 500)
    seqs = [s for f, last, _, _ in onchain(own_chain, audit_anchor_artifact, address)
            for s in range(f, last + 1)]
    assert seqs == list(range(1, 501))


class ChainDiesBeforeSend(Web3ChainClient):
    """The real client, with the node stopped at the moment of sending; it checks what was saved."""

    def __init__(self, node, **kwargs):
        super().__init__(**kwargs)
        self.node, self.seen = node, None

    def send_raw(self, raw: bytes) -> str:
        if self.seen is None:  # only the first send meets a dead node
            self.seen = list(AnchorBatch.objects.values_list("raw_tx", "status", "attempts"))
            self.seen_in_transaction = connection.in_atomic_block
            self.node.stop()
        return super().send_raw(raw)


def test_the_signed_transaction_is_committed_before_it_is_sent(anvil_node, own_chain,
                                                               audit_anchor_artifact):
    client = ChainDiesBeforeSend(anvil_node, rpc_url=anvil_node.url,
                                 private_key=settings.CHAIN_PRIVATE_KEY, timeout=1.0)
    append(3)

    report = anchor_tick(client=client)

    assert report.unavailable and report.created == [(1, 3)] and report.sent == []
    batch = AnchorBatch.objects.get()
    assert client.seen == [(batch.raw_tx, "pending", 0)] and client.seen_in_transaction is False
    assert (batch.status, batch.attempts, batch.sent_at) == ("pending", 0, None)
    assert set(AuditEntry.objects.values_list("batch", flat=True)) == {batch.pk}

    anvil_node.start()
    again = anchor_tick(client=client)

    assert again.sent == [batch.tx_hash] and again.confirmed == [(1, 3)]
    assert AnchorBatch.objects.get().tx_hash == batch.tx_hash
    assert_anchored_exactly_once(client, audit_anchor_artifact, batch.contract, 3)


# --- stuck transactions ------------------------------------------------------------------------

@pytest.fixture
def manual_mining(anvil_node, own_chain):
    rpc(anvil_node, "evm_setAutomine", False)
    return anvil_node


def test_a_dropped_transaction_is_resent_with_the_same_bytes(manual_mining, own_chain,
                                                             audit_anchor_artifact):
    node, t0 = manual_mining, timezone.now()
    append(3)
    first = anchor_tick(client=own_chain, now=t0)
    batch = AnchorBatch.objects.get()
    rpc(node, "anvil_dropTransaction", batch.tx_hash)
    assert rpc(node, "eth_getTransactionByHash", batch.tx_hash) is None

    early = anchor_tick(client=own_chain, now=t0 + timedelta(seconds=RESEND - 1))
    late = anchor_tick(client=own_chain, now=t0 + timedelta(seconds=RESEND + 1))

    assert first.sent == [batch.tx_hash] and first.confirmed == []
    assert early.resent == [] and late.resent == [batch.tx_hash]
    resent = AnchorBatch.objects.get()
    assert (resent.raw_tx, resent.tx_hash, resent.attempts) == (batch.raw_tx, batch.tx_hash, 2)
    assert rpc(node, "eth_getTransactionByHash", batch.tx_hash) is not None

    rpc(node, "evm_mine")
    assert anchor_tick(client=own_chain, now=t0 + timedelta(seconds=RESEND + 2)).confirmed == [(1, 3)]
    assert AnchorBatch.objects.get().tx_hash == batch.tx_hash
    assert_anchored_exactly_once(own_chain, audit_anchor_artifact, batch.contract, 3)


def _tick_until_replaced(client, t0):
    """Send, resend twice (3 broadcasts), then the fourth timeout replaces."""
    reports = [anchor_tick(client=client, now=t0 + timedelta(seconds=(RESEND + 1) * k))
               for k in range(4)]
    assert [len(r.resent) for r in reports] == [0, 1, 1, 0]
    return reports[-1]


def test_a_stuck_transaction_is_replaced_with_higher_fees(manual_mining, own_chain,
                                                          audit_anchor_artifact):
    node, t0 = manual_mining, timezone.now()
    append(3)
    anchor_tick(client=own_chain, now=t0)
    stuck = AnchorBatch.objects.get()

    replaced = _tick_until_replaced(own_chain, t0)

    batch = AnchorBatch.objects.get()
    assert replaced.replaced == [(stuck.tx_hash, batch.tx_hash)]
    assert batch.tx_hash != stuck.tx_hash and batch.nonce == stuck.nonce
    assert batch.max_fee_per_gas * 8 >= stuck.max_fee_per_gas * 9
    assert batch.max_priority_fee_per_gas * 8 >= stuck.max_priority_fee_per_gas * 9
    assert (batch.status, batch.attempts) == ("sent", 1)

    rpc(node, "evm_mine")
    done = anchor_tick(client=own_chain, now=t0 + timedelta(seconds=200))

    assert done.confirmed == [(1, 3)]
    assert AnchorBatch.objects.get().tx_hash == batch.tx_hash
    assert own_chain.receipt(stuck.tx_hash) is None
    assert_anchored_exactly_once(own_chain, audit_anchor_artifact, batch.contract, 3)


def test_when_the_replaced_transaction_is_mined_instead_the_batch_follows_the_chain(
        manual_mining, own_chain, audit_anchor_artifact):
    node, t0 = manual_mining, timezone.now()
    append(3)
    anchor_tick(client=own_chain, now=t0)
    stuck = AnchorBatch.objects.get()
    _tick_until_replaced(own_chain, t0)
    replacement = AnchorBatch.objects.get()
    rpc(node, "anvil_dropTransaction", replacement.tx_hash)
    own_chain.send_raw(bytes(stuck.raw_tx))  # the old bytes reach a miner after all
    rpc(node, "evm_mine")

    report = anchor_tick(client=own_chain, now=t0 + timedelta(seconds=200))

    assert report.confirmed == [(1, 3)] and report.conflict is None
    batch = AnchorBatch.objects.get()
    assert batch.tx_hash == stuck.tx_hash and own_chain.receipt(replacement.tx_hash) is None
    assert_anchored_exactly_once(own_chain, audit_anchor_artifact, batch.contract, 3)


@pytest.mark.django_db(transaction=True)
def test_a_contract_without_code_is_reported_and_nothing_is_signed(chain, settings, tmp_path):
    from ledger.anchoring import anchor_tick
    from ledger.models import AnchorBatch
    from ledger.services import audit_append

    settings.CHAIN_DEPLOYMENTS_FILE = tmp_path / "deployments.json"
    settings.CHAIN_DEPLOYMENTS_FILE.write_text(
        '{"31337": {"AuditAnchor": {"address": "0x000000000000000000000000000000000000dEaD"}}}')
    settings.AUDIT_ANCHOR_INTERVAL_SECONDS = 0
    audit_append(event={"resourceType": "AuditEvent"}, patient_id=None, agent="a", outcome="0")
    nonce = chain.nonce(chain.address, pending=True)

    report = anchor_tick(client=chain)

    assert "has no code" in report.unavailable
    assert AnchorBatch.objects.count() == 0
    assert chain.nonce(chain.address, pending=True) == nonce
