"""AuditAnchor's rules and gas, exercised through the chain port against the real anvil node."""

from __future__ import annotations

import os

import pytest
from web3 import Web3

from ledger.chain import ContractRejected
from ledger.chain.web3_client import Web3ChainClient
from ledger.verify import audit_check, audit_format
from ledger.verify.errors import ProofInvalid
from tests.conftest import OUTSIDER_KEY

ROOT_A = bytes.fromhex("aa" * 32)
ROOT_B = bytes.fromhex("bb" * 32)
GAS_BUDGET = 50_000  # issue 4: whole anchor transaction, intrinsic 21,000 included
RECENT = 16


def w3() -> Web3:
    return Web3(Web3.HTTPProvider(os.environ["CHAIN_RPC_URL"]))


@pytest.fixture
def anchor(chain, audit_anchor_artifact):
    """A fresh AuditAnchor whose only member is the node's account."""
    address = chain.deploy(audit_anchor_artifact, chain.address)["address"]
    role = chain.call(audit_anchor_artifact, address, "MEMBER_ROLE")
    granted = chain.transact(audit_anchor_artifact, address, "grantRole", role, chain.address)

    def send(*args, client=chain):
        return client.transact(audit_anchor_artifact, address, "anchor", *args)

    def view(function, *args):
        return chain.call(audit_anchor_artifact, address, function, *args)

    send.view = view
    send.address = address
    send.grant_tx = granted["transaction"]
    return send


def anchored_events(artifact, address, block):
    contract = w3().eth.contract(address=address, abi=artifact.abi)
    return contract.events.Anchored().get_logs(from_block=block, to_block=block)


def gas_used(sent: dict) -> int:
    return w3().eth.get_transaction_receipt(sent["transaction"])["gasUsed"]


def test_first_anchor_starts_at_one_and_emits_one_event(anchor, chain, audit_anchor_artifact):
    receipt = anchor(1, 10, ROOT_A)

    events = anchored_events(audit_anchor_artifact, anchor.address, receipt["block"])
    assert [dict(e["args"]) for e in events] == [
        {"member": chain.address, "firstSeq": 1, "lastSeq": 10, "root": ROOT_A}
    ]
    assert anchor.view("lastAnchored", chain.address) == 10
    assert anchor.view("isRecent", chain.address, 1, 10, ROOT_A) is True


def test_contiguous_ranges_are_accepted(anchor, chain):
    anchor(1, 10, ROOT_A)
    anchor(11, 11, ROOT_B)

    assert anchor.view("lastAnchored", chain.address) == 11


@pytest.mark.parametrize("first", [0, 2, 12])
def test_gap_or_wrong_start_is_rejected_and_nothing_changes(anchor, chain, first):
    if first == 12:
        anchor(1, 10, ROOT_A)
    before = anchor.view("historyOf", chain.address)

    with pytest.raises(ContractRejected):
        anchor(first, first + 5, ROOT_B)

    assert anchor.view("historyOf", chain.address) == before


@pytest.mark.parametrize(("first", "last", "root"), [(5, 15, ROOT_B), (1, 12, ROOT_A), (1, 10, ROOT_B)])
def test_overlap_is_rejected(anchor, chain, first, last, root):
    anchor(1, 10, ROOT_A)
    before = anchor.view("historyOf", chain.address)

    with pytest.raises(ContractRejected, match="Overlap"):
        anchor(first, last, root)

    assert anchor.view("historyOf", chain.address) == before


def test_repeat_of_same_root_and_range_is_a_no_op(anchor, chain, audit_anchor_artifact):
    anchor(1, 10, ROOT_A)
    before = anchor.view("historyOf", chain.address)

    receipt = anchor(1, 10, ROOT_A)

    assert anchored_events(audit_anchor_artifact, anchor.address, receipt["block"]) == []
    assert anchor.view("historyOf", chain.address) == before


def test_only_the_16_most_recent_anchors_may_be_repeated(anchor, chain, audit_anchor_artifact):
    """The 17th anchor pushes the 1st out of the window: its repeat now reverts Overlap."""
    assert anchor.view("RECENT_ANCHORS") == RECENT
    for seq in range(1, RECENT + 1):
        anchor(seq, seq, seq.to_bytes(32, "big"))
    anchor(1, 1, (1).to_bytes(32, "big"))  # still in the window: no-op

    anchor(RECENT + 1, RECENT + 1, ROOT_A)

    with pytest.raises(ContractRejected, match=rf"Overlap\({RECENT + 2}, 1\)"):
        anchor(1, 1, (1).to_bytes(32, "big"))
    receipt = anchor(2, 2, (2).to_bytes(32, "big"))  # now the oldest in the window
    assert anchored_events(audit_anchor_artifact, anchor.address, receipt["block"]) == []
    assert anchor.view("lastAnchored", chain.address) == RECENT + 1


def test_history_of_is_the_documented_sha256_accumulator(anchor, chain):
    ranges = [(1, 10, ROOT_A), (11, 11, ROOT_B), (12, 1_000_011, ROOT_A)]
    assert anchor.view("historyOf", chain.address) == [
        0, 0, audit_format.genesis_accumulator(anchor.address, chain.address)]

    for first, last, root in ranges:
        anchor(first, last, root)

    assert anchor.view("historyOf", chain.address) == [
        1_000_011, 3, audit_format.history_accumulator(anchor.address, chain.address, ranges)]
    where = {"chain_id": chain.chain_id(), "contract": anchor.address, "member": chain.address}
    audit_check.check_history(os.environ["CHAIN_RPC_URL"], **where, ranges=ranges, confirmed=3)
    with pytest.raises(ProofInvalid, match="accumulator"):
        audit_check.check_history(os.environ["CHAIN_RPC_URL"], **where,
                             ranges=[*ranges[:2], (12, 1_000_011, ROOT_B)], confirmed=3)


def test_invalid_range_and_empty_root_are_rejected(anchor):
    with pytest.raises(ContractRejected, match="InvalidRange"):
        anchor(5, 4, ROOT_A)
    with pytest.raises(ContractRejected, match="EmptyRoot"):
        anchor(1, 1, bytes(32))


def test_only_members_may_anchor(anchor, chain, audit_anchor_artifact):
    outsider = Web3ChainClient(rpc_url=os.environ["CHAIN_RPC_URL"], private_key=OUTSIDER_KEY)

    with pytest.raises(ContractRejected, match="AccessControlUnauthorizedAccount"):
        anchor(1, 1, ROOT_A, client=outsider)

    assert anchor.view("historyOf", outsider.address) == [0, 0, bytes(32)]


def test_ranges_are_per_member(anchor, chain, audit_anchor_artifact):
    outsider = Web3ChainClient(rpc_url=os.environ["CHAIN_RPC_URL"], private_key=OUTSIDER_KEY)
    role = anchor.view("MEMBER_ROLE")
    chain.transact(audit_anchor_artifact, anchor.address, "grantRole", role, outsider.address)
    anchor(1, 10, ROOT_A)

    anchor(1, 3, ROOT_B, client=outsider)

    assert anchor.view("lastAnchored", outsider.address) == 3
    assert anchor.view("lastAnchored", chain.address) == 10


# --- gas (issue 4): real receipts ----------------------------------------------------------------

def test_every_anchor_costs_at_most_50k_gas_the_first_one_too(anchor, chain):
    first = gas_used(anchor(1, 1, ROOT_A))
    steady = {}
    next_seq = 2
    for _ in range(RECENT):  # wrap the ring once: every later write is to a used slot
        anchor(next_seq, next_seq, ROOT_B)
        next_seq += 1
    for size in (1, 1_000, 1_000_000):
        steady[size] = gas_used(anchor(next_seq, next_seq + size - 1, ROOT_A))
        next_seq += size

    assert first <= GAS_BUDGET
    assert all(gas <= GAS_BUDGET for gas in steady.values()), steady
    # The member's slots were made nonzero at registration: the first anchor writes no fresh slot.
    assert abs(first - steady[1]) < 500


def test_registration_pays_the_fresh_slots_and_a_no_op_repeat_is_cheaper(anchor, chain):
    grant = w3().eth.get_transaction_receipt(anchor.grant_tx)["gasUsed"]
    new = gas_used(anchor(1, 10, ROOT_A))

    repeat = gas_used(anchor(1, 10, ROOT_A))

    assert grant > RECENT * 22_100  # the ring, the accumulator and the member slot, once
    assert repeat < new
