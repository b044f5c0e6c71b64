"""AuditAnchor's rules, exercised through the chain port against the real anvil node."""

from __future__ import annotations

import os

import pytest
from web3 import Web3

from ledger.chain import ContractRejected
from ledger.chain.web3_client import Web3ChainClient
from tests.conftest import OUTSIDER_KEY

ROOT_A = bytes.fromhex("aa" * 32)
ROOT_B = bytes.fromhex("bb" * 32)


@pytest.fixture
def anchor(chain, audit_anchor_artifact):
    """A fresh AuditAnchor whose only member is the node's account."""
    address = chain.deploy(audit_anchor_artifact, chain.address)["address"]
    role = chain.call(audit_anchor_artifact, address, "MEMBER_ROLE")
    chain.transact(audit_anchor_artifact, address, "grantRole", role, chain.address)

    def send(*args, client=chain):
        return client.transact(audit_anchor_artifact, address, "anchor", *args)

    def view(function, *args):
        return chain.call(audit_anchor_artifact, address, function, *args)

    send.view = view
    send.address = address
    return send


def anchored_events(artifact, address, block):
    w3 = Web3(Web3.HTTPProvider(os.environ["CHAIN_RPC_URL"]))
    contract = w3.eth.contract(address=address, abi=artifact.abi)
    return contract.events.Anchored().get_logs(from_block=block, to_block=block)


def test_first_anchor_starts_at_one_and_emits_one_event(anchor, chain, audit_anchor_artifact):
    receipt = anchor(1, 10, ROOT_A)

    events = anchored_events(audit_anchor_artifact, anchor.address, receipt["block"])
    assert [dict(e["args"]) for e in events] == [
        {"member": chain.address, "firstSeq": 1, "lastSeq": 10, "root": ROOT_A}
    ]
    assert anchor.view("lastAnchored", chain.address) == 10
    assert anchor.view("anchorOf", chain.address, 1) == [10, ROOT_A]


def test_contiguous_ranges_are_accepted(anchor, chain):
    anchor(1, 10, ROOT_A)
    anchor(11, 11, ROOT_B)

    assert anchor.view("lastAnchored", chain.address) == 11


@pytest.mark.parametrize("first", [0, 2, 12])
def test_gap_or_wrong_start_is_rejected_and_nothing_changes(anchor, chain, first):
    if first == 12:
        anchor(1, 10, ROOT_A)
    before = anchor.view("lastAnchored", chain.address)

    with pytest.raises(ContractRejected):
        anchor(first, first + 5, ROOT_B)

    assert anchor.view("lastAnchored", chain.address) == before


@pytest.mark.parametrize(("first", "last", "root"), [(5, 15, ROOT_B), (1, 12, ROOT_A), (1, 10, ROOT_B)])
def test_overlap_is_rejected(anchor, chain, first, last, root):
    anchor(1, 10, ROOT_A)

    with pytest.raises(ContractRejected, match="Overlap"):
        anchor(first, last, root)

    assert anchor.view("anchorOf", chain.address, 1) == [10, ROOT_A]


def test_repeat_of_same_root_and_range_is_a_no_op(anchor, chain, audit_anchor_artifact):
    anchor(1, 10, ROOT_A)

    receipt = anchor(1, 10, ROOT_A)

    assert anchored_events(audit_anchor_artifact, anchor.address, receipt["block"]) == []
    assert anchor.view("lastAnchored", chain.address) == 10


def test_invalid_range_and_empty_root_are_rejected(anchor):
    with pytest.raises(ContractRejected, match="InvalidRange"):
        anchor(5, 4, ROOT_A)
    with pytest.raises(ContractRejected, match="EmptyRoot"):
        anchor(1, 1, bytes(32))


def test_only_members_may_anchor(anchor, chain, audit_anchor_artifact):
    outsider = Web3ChainClient(rpc_url=os.environ["CHAIN_RPC_URL"], private_key=OUTSIDER_KEY)

    with pytest.raises(ContractRejected, match="AccessControlUnauthorizedAccount"):
        anchor(1, 1, ROOT_A, client=outsider)

    assert anchor.view("lastAnchored", outsider.address) == 0


def test_ranges_are_per_member(anchor, chain, audit_anchor_artifact):
    outsider = Web3ChainClient(rpc_url=os.environ["CHAIN_RPC_URL"], private_key=OUTSIDER_KEY)
    role = anchor.view("MEMBER_ROLE")
    chain.transact(audit_anchor_artifact, anchor.address, "grantRole", role, outsider.address)
    anchor(1, 10, ROOT_A)

    anchor(1, 3, ROOT_B, client=outsider)

    assert anchor.view("lastAnchored", outsider.address) == 3
    assert anchor.view("lastAnchored", chain.address) == 10
