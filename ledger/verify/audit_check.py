"""Checking an audit proof: first everything that needs no chain, then its anchor on the chain.

Needs only the proof and a JSON-RPC URL of any node of the chain (``carrack-verify
audit-proof``); the node's own integrity check (``ledger.integrity``) uses the same anchor
and history checks. docs/audit-ledger.md.
"""

from __future__ import annotations

from . import merkle
from .audit_format import address_word, chain_hash, entry_hash, history_accumulator, leaf_hash
from .audit_proof import VERSIONS, hex_of
from .errors import ProofInvalid
from .rpc import JsonRpc

# keccak256("Anchored(address,uint64,uint64,bytes32)"), the AuditAnchor event's topic 0.
ANCHORED_TOPIC = "0x86d1879d76f621db59018592db483e96846d4de01c2e017d2d3bf3bdb5baf0b7"
# keccak256("historyOf(address)")[:4]: AuditAnchor's (lastSeq, anchors, accumulator) view.
HISTORY_OF_SELECTOR = "0x0bb4b6aa"


def verify_proof(proof: dict, *, rpc_url: str, timeout: float = 10.0) -> tuple[bool, str]:
    """Check a proof against the chain; ``(True, summary)`` or ``(False, reason)``."""
    try:
        root = verify_offline(proof)
        anchor = proof["anchor"]
        check_anchor(rpc_url, anchor, root, timeout=timeout)
    except ProofInvalid as error:
        return False, str(error)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        return False, f"malformed proof document ({type(error).__name__}: {error})"
    what = "event and leaf" if "salt" in proof else "leaf"
    # The contract and the member come from the proof: the summary names them so the reader
    # can compare them with the consortium's published addresses.
    return True, (f"{what} of entry seq {proof['entry']['seq']} are in root {hex_of(root)} anchored "
                  f"for seq {anchor['first_seq']}..{anchor['last_seq']} by member {anchor['member']} "
                  f"on contract {anchor['contract']}, transaction {anchor['transaction']} in block "
                  f"{anchor['block_number']} on chain {anchor['chain_id']}")


def verify_offline(proof: dict) -> bytes:
    """Everything that needs no chain: leaf, entry hash, range and Merkle path; the root."""
    version = proof.get("version")
    if version not in VERSIONS or isinstance(version, bool):
        raise ProofInvalid(f"unsupported proof version {version!r}")
    entry, tree, anchor = proof["entry"], proof["merkle"], proof["anchor"]
    seq = int(entry["seq"])
    leaf = _unhex(entry["leaf_hash"], "entry.leaf_hash")
    if ("event" in entry) != ("salt" in proof):
        raise ProofInvalid("the event and the salt come together: one without the other proves nothing")
    if not isinstance(anchor.get("member"), str):
        raise ProofInvalid("the proof does not name the member that anchored the root")
    if version == 1:
        _check_v1_entry_hash(entry, seq)
    if "event" in entry and leaf_hash(_unhex(proof["salt"], "salt"), seq, entry["event"].encode()) != leaf:
        raise ProofInvalid("the leaf hash does not match the salted event")
    if version != 1:
        _check_chain_hash(entry, seq, leaf)
    first, last = int(anchor["first_seq"]), int(anchor["last_seq"])
    if not first <= seq <= last:
        raise ProofInvalid(f"seq {seq} is outside the anchored range {first}..{last}")
    if tree["leaf_index"] != seq - first or tree["tree_size"] != last - first + 1:
        raise ProofInvalid("the Merkle leaf index or tree size does not match the anchored range")
    path = [_unhex(node, "merkle.path") for node in tree["path"]]
    try:
        root = merkle.root_from_path(leaf, tree["leaf_index"], tree["tree_size"], path)
    except ValueError as error:
        raise ProofInvalid(f"the Merkle path does not fit the tree: {error}") from None
    if root != _unhex(tree["root"], "merkle.root"):
        raise ProofInvalid("the Merkle path does not lead to the stated root")
    return root


def _check_v1_entry_hash(entry: dict, seq: int) -> None:
    """Version 1 documents (handed out before hash version 2): the entry hash is over the event."""
    if "event" in entry and entry_hash(_unhex(entry["prev_hash"], "entry.prev_hash"), seq,
                                       entry["event"].encode()) != _unhex(entry["entry_hash"], "entry.entry_hash"):
        raise ProofInvalid("the entry hash does not match the event")


def _check_chain_hash(entry: dict, seq: int, leaf: bytes) -> None:
    """Version 2: the chain hashes, when given, link this leaf to the node's hash chain."""
    if ("prev_hash" in entry) != ("entry_hash" in entry):
        raise ProofInvalid("prev_hash and entry_hash come together: one without the other proves nothing")
    if "entry_hash" in entry and chain_hash(_unhex(entry["prev_hash"], "entry.prev_hash"), seq, leaf) != \
            _unhex(entry["entry_hash"], "entry.entry_hash"):
        raise ProofInvalid("the entry hash does not match the previous hash, seq and leaf")


def check_anchor(rpc_url: str, anchor: dict, root: bytes, *, timeout: float = 10.0) -> None:
    """The transaction succeeded, went to the contract, sits in the stated (canonical) block
    and emitted ``Anchored(member, first_seq, last_seq, root)`` from the contract."""
    rpc = JsonRpc(rpc_url, timeout)
    if int(rpc.call("eth_chainId"), 16) != int(anchor["chain_id"]):
        raise ProofInvalid(f"the node is not on chain {anchor['chain_id']}")
    receipt = rpc.call("eth_getTransactionReceipt", anchor["transaction"])
    if receipt is None:
        raise ProofInvalid(f"transaction {anchor['transaction']} is not on the chain")
    contract = anchor["contract"].lower()
    if int(receipt["status"], 16) != 1:
        raise ProofInvalid("the anchor transaction reverted")
    if (receipt.get("to") or "").lower() != contract:
        raise ProofInvalid("the anchor transaction was not sent to the contract")
    if receipt["blockHash"].lower() != anchor["block_hash"].lower() or \
            int(receipt["blockNumber"], 16) != int(anchor["block_number"]):
        raise ProofInvalid("the anchor transaction is not in the stated block")
    block = rpc.call("eth_getBlockByNumber", hex(int(anchor["block_number"])), False)
    if block is None or block["hash"].lower() != anchor["block_hash"].lower():
        raise ProofInvalid("the stated block is not on the canonical chain")
    if not any(_is_anchored_log(log, contract, anchor, root) for log in receipt["logs"]):
        raise ProofInvalid("the transaction has no Anchored event for this range and root")


def check_history(rpc_url: str, *, chain_id: int, contract: str, member: str,
                  ranges: list[tuple[int, int, bytes]], confirmed: int,
                  timeout: float = 10.0) -> None:
    """The member's on-chain accumulator commits to a prefix of ``ranges``, and nothing else.

    ``ranges`` are the member's anchors as the caller knows them, in order; the first
    ``confirmed`` must all be on chain, the rest may still be in flight. Unlike the events,
    the accumulator is state: it answers even where the node pruned old receipts, and it
    catches an anchor on chain that the caller does not know of.
    """
    rpc = JsonRpc(rpc_url, timeout)
    if int(rpc.call("eth_chainId"), 16) != int(chain_id):
        raise ProofInvalid(f"the node is not on chain {chain_id}")
    call = {"to": contract, "data": HISTORY_OF_SELECTOR + address_word(member).hex()}
    data = bytes.fromhex((rpc.call("eth_call", call, "latest") or "0x")[2:])
    if len(data) != 96:
        raise ProofInvalid(f"{contract} does not answer historyOf (no AuditAnchor there?)")
    last, anchors = int.from_bytes(data[:32], "big"), int.from_bytes(data[32:64], "big")
    if not confirmed <= anchors <= len(ranges):
        raise ProofInvalid(f"member {member} has {anchors} anchors, the batches say "
                           f"{confirmed} confirmed of {len(ranges)}")
    known = ranges[:anchors]
    if last != (known[-1][1] if known else 0) or \
            data[64:] != history_accumulator(contract, member, known):
        raise ProofInvalid(f"the accumulator of member {member} ({anchors} anchors up to seq "
                           f"{last}) differs from the batches' ranges and roots")


def _is_anchored_log(log: dict, contract: str, anchor: dict, root: bytes) -> bool:
    topics = [topic.lower() for topic in log["topics"]]
    data = bytes.fromhex(log["data"][2:])
    member = anchor.get("member")
    return (
        log["address"].lower() == contract
        and len(topics) == 3 and topics[0] == ANCHORED_TOPIC
        and topics[1] == "0x" + member.lower()[2:].rjust(64, "0")
        and int(topics[2], 16) == int(anchor["first_seq"])
        and len(data) == 64
        and int.from_bytes(data[:32], "big") == int(anchor["last_seq"])
        and data[32:] == root
    )


def _unhex(value: str, field: str) -> bytes:
    text = value.removeprefix("0x")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ProofInvalid(f"{field} is not hex") from None
    if field != "salt" and len(raw) != merkle.HASH_SIZE:
        raise ProofInvalid(f"{field} is not a 32-byte hash")
    return raw
