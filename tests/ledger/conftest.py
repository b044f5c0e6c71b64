"""Ledger test helpers: audit entries anchored directly (without the anchoring job's retries)."""

from __future__ import annotations

import os

import pytest
from django.conf import settings as django_settings
from web3 import Web3

from ledger.chain.web3_client import Web3ChainClient
from ledger.models import AnchorBatch, AuditEntry
from ledger.selectors import audit_range_leaves
from ledger.services import audit_append, audit_sequence, contracts_deploy
from ledger.verify import merkle

RPC = os.environ.get("CHAIN_RPC_URL", "http://127.0.0.1:8545")


def anchor_batch(*, chain, artifact, address: str, first: int, last: int) -> AnchorBatch:
    """What the anchoring job does, minus its retries: one anchor transaction, one confirmed row."""
    root = merkle.root(audit_range_leaves(first_seq=first, last_seq=last))
    sent = chain.transact(artifact, address, "anchor", first, last, root)
    w3 = Web3(Web3.HTTPProvider(RPC))
    tx = w3.eth.get_transaction(sent["transaction"])
    # The receipt, not the transaction: anvil has answered get_transaction without blockHash
    # right after mining.
    receipt = w3.eth.get_transaction_receipt(sent["transaction"])
    batch = AnchorBatch.objects.create(
        first_seq=first, last_seq=last, root=root, status="confirmed", chain_id=chain.chain_id(),
        contract=address, signer=chain.address, nonce=tx["nonce"], raw_tx=b"",
        tx_hash=sent["transaction"], max_fee_per_gas=tx.get("maxFeePerGas", 0),
        max_priority_fee_per_gas=tx.get("maxPriorityFeePerGas", 0), block_number=sent["block"],
        block_hash=receipt["blockHash"].to_0x_hex())
    AuditEntry.objects.filter(seq__gte=first, seq__lte=last).update(batch=batch)
    return batch


def anchored_entries(*, deployed, chain, artifact, count: int,
                     ranges: list[tuple[int, int]]) -> list[AuditEntry]:
    """``count`` audit entries of patient p1 by dr-who, sequenced, anchored in ``ranges``."""
    address = deployed["AuditAnchor"]["address"]
    entries = [audit_append(event={"resourceType": "AuditEvent", "n": i}, patient_id="p1",
                            agent="dr-who", outcome="0") for i in range(count)]
    audit_sequence()
    for first, last in ranges:
        anchor_batch(chain=chain, artifact=artifact, address=address, first=first, last=last)
    return entries


def configure_anchoring(settings, *, max_entries: int) -> None:
    """Anchor at once (no interval), one confirmation, the default resend/replace policy."""
    settings.AUDIT_ANCHOR_INTERVAL_SECONDS = 0
    settings.AUDIT_ANCHOR_MAX_ENTRIES = max_entries
    settings.AUDIT_ANCHOR_CONFIRMATIONS = 1
    settings.AUDIT_ANCHOR_RESEND_SECONDS = 30
    settings.AUDIT_ANCHOR_REPLACE_AFTER = 3


@pytest.fixture
def own_chain(anvil_node, deployments_file, settings) -> Web3ChainClient:
    """A client of this test's own anvil (which it may stop), AuditAnchor deployed, settings on it."""
    settings.CHAIN_RPC_URL = anvil_node.url
    client = Web3ChainClient(rpc_url=anvil_node.url, private_key=settings.CHAIN_PRIVATE_KEY, timeout=1.0)
    deploy_anchor(client, deployments_file)
    return client


def deploy_anchor(client, registry) -> str:
    """AuditAnchor's address on the client's chain, deployed there if it is not yet."""
    return contracts_deploy(client=client, names=["AuditAnchor"], build_dir=django_settings.CONTRACTS_BUILD_DIR,
                            registry=registry)["AuditAnchor"]["address"]
