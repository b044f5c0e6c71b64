"""Audit proof documents: the byte formats, building a proof, and checking one offline.

Everything here except ``audit_proof`` is pure and imports neither Django nor web3, so
``carrack-verify`` runs with the server switched off: it needs the proof and a JSON-RPC
URL of any node of the chain. Formats and schema: docs/audit-ledger.md.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from . import merkle

if TYPE_CHECKING:
    from .models import AuditEntry

# Proof documents: version 2 (chain hashes over the salted leaf) is written; 1 is still read,
# so proofs handed out before the change keep verifying.
VERSION = 2
VERSIONS = (1, 2)
# ``AuditEntry.hash_version``: how an entry's chain hash was computed (docs/audit-ledger.md).
# 1 (entries sequenced before migration 0005): over the event, unsalted, so it confirms a
# guessed event and is never put in a proof; 2: over the salted leaf.
HASH_V1, HASH_V2 = 1, 2
GENESIS_HASH = bytes(32)
# keccak256("Anchored(address,uint64,uint64,bytes32)"), the AuditAnchor event's topic 0.
ANCHORED_TOPIC = "0x86d1879d76f621db59018592db483e96846d4de01c2e017d2d3bf3bdb5baf0b7"
# keccak256("historyOf(address)")[:4]: AuditAnchor's (lastSeq, anchors, accumulator) view.
HISTORY_OF_SELECTOR = "0x0bb4b6aa"


class ProofUnavailable(Exception):
    """The entry has no proof yet (not sequenced, or its batch is not confirmed)."""

    def __init__(self, message: str, status: dict) -> None:
        super().__init__(message)
        self.status = status


# --- formats ---------------------------------------------------------------------------------

def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 characters kept as is (not \\u-escaped)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def seq_bytes(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


def entry_hash(prev_hash: bytes, seq: int, event: bytes) -> bytes:
    """Hash version 1 (legacy) chain link: SHA-256(prev_hash || seq (8 bytes BE) || event bytes).

    Unsalted: anyone holding it can confirm a guessed event. Only entries sequenced before
    hash version 2 carry it; ``ledger_verify`` still checks them, proofs never show it.
    """
    return hashlib.sha256(prev_hash + seq_bytes(seq) + event).digest()


def chain_hash(prev_hash: bytes, seq: int, leaf: bytes) -> bytes:
    """Hash version 2 chain link: SHA-256(0x02 || prev_hash || seq (8 bytes BE) || leaf hash).

    Over the salted leaf rather than the event, so a chain hash is no oracle for a guessed
    event (0x02 keeps it apart from RFC 6962's leaf 0x00 and node 0x01 inputs).
    """
    return hashlib.sha256(b"\x02" + prev_hash + seq_bytes(seq) + leaf).digest()


def leaf_hash(salt: bytes, seq: int, event: bytes) -> bytes:
    """RFC 6962 leaf: SHA-256(0x00 || salt || seq (8 bytes BE) || event bytes)."""
    return merkle.leaf_hash(salt + seq_bytes(seq) + event)


def genesis_accumulator(contract: str, member: str) -> bytes:
    """AuditAnchor's acc_0 of a member: SHA-256(contract || member), each a 32-byte word."""
    return hashlib.sha256(_address_word(contract) + _address_word(member)).digest()


def next_accumulator(accumulator: bytes, first_seq: int, last_seq: int, root: bytes) -> bytes:
    """acc_n = SHA-256(acc_{n-1} || first_seq || last_seq (32-byte words) || root), as on chain."""
    return hashlib.sha256(accumulator + first_seq.to_bytes(32, "big") + last_seq.to_bytes(32, "big")
                          + root).digest()


def history_accumulator(contract: str, member: str, ranges: list[tuple[int, int, bytes]]) -> bytes:
    """The accumulator after the member anchored ``ranges`` ((first, last, root), in order)."""
    accumulator = genesis_accumulator(contract, member)
    for first, last, root in ranges:
        accumulator = next_accumulator(accumulator, first, last, root)
    return accumulator


def _address_word(address: str) -> bytes:
    return bytes.fromhex(address.lower().removeprefix("0x")).rjust(32, b"\0")


# --- building --------------------------------------------------------------------------------

def audit_proof(*, entry: AuditEntry, include_salt: bool = True) -> dict:
    """The proof document of one anchored entry; ``ProofUnavailable`` until it is anchored.

    The event text goes with the salt only: without the salt the event cannot be tied to
    the on-chain root anyway, and a caller not allowed the salt sees hashes only. Only
    salted hashes ever go out: the chain hashes only when both the entry's and its
    predecessor's are hash version 2 (a version 1 hash confirms a guessed event).
    """
    from .audit import audit_chain_is_salted, audit_range_leaves, audit_salt_get

    batch = entry.batch
    if entry.seq is None or batch is None or batch.status != "confirmed":
        status = {"id": entry.pk, "seq": entry.seq,
                  "anchor": "unsequenced" if entry.seq is None else (batch.status if batch else "pending")}
        raise ProofUnavailable("the entry is not anchored yet", status)
    leaves = audit_range_leaves(first_seq=batch.first_seq, last_seq=batch.last_seq)
    salt = audit_salt_get(entry=entry) if include_salt else None
    salted = audit_chain_is_salted(entry=entry)
    return proof_document(
        entry_id=entry.pk, seq=entry.seq, event=entry.event if salt is not None else None,
        salt=salt, prev_hash=bytes(entry.prev_hash) if salted else None,
        entry_hash=bytes(entry.entry_hash) if salted else None,
        leaves=leaves, first_seq=batch.first_seq,
        anchor=anchor_fields(batch),
    )


def anchor_fields(batch: Any) -> dict:
    """The proof's ``anchor`` object from an ``AnchorBatch`` row."""
    return {"first_seq": batch.first_seq, "last_seq": batch.last_seq, "chain_id": batch.chain_id,
            "contract": batch.contract, "member": batch.signer, "transaction": batch.tx_hash,
            "block_number": batch.block_number, "block_hash": batch.block_hash}


def proof_document(*, entry_id: int, seq: int, event: str | None, salt: bytes | None,
                   prev_hash: bytes | None, entry_hash: bytes | None, leaves: list[bytes],
                   first_seq: int, anchor: dict) -> dict:
    """A version 2 document; ``prev_hash``/``entry_hash`` (hash version 2 only) go together or not at all."""
    index = seq - first_seq
    entry: dict[str, Any] = {"id": entry_id, "seq": seq}
    if event is not None:
        entry["event"] = event
    entry["leaf_hash"] = _hex(leaves[index])
    if prev_hash is not None and entry_hash is not None:
        entry.update(prev_hash=_hex(prev_hash), entry_hash=_hex(entry_hash))
    proof: dict[str, Any] = {"version": VERSION, "entry": entry}
    if salt is not None:
        proof["salt"] = salt.hex()
    proof["merkle"] = {
        "leaf_index": index,
        "tree_size": len(leaves),
        "path": [_hex(node) for node in merkle.inclusion_path(leaves, index)],
        "root": _hex(merkle.root(leaves)),
    }
    proof["anchor"] = anchor
    return proof


# --- verifying -------------------------------------------------------------------------------

class ProofInvalid(Exception):
    """Why a proof does not hold (the message is the reason shown to the user)."""


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
    return True, (f"{what} of entry seq {proof['entry']['seq']} are in root {_hex(root)} anchored "
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
    rpc = _JsonRpc(rpc_url, timeout)
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
    rpc = _JsonRpc(rpc_url, timeout)
    if int(rpc.call("eth_chainId"), 16) != int(chain_id):
        raise ProofInvalid(f"the node is not on chain {chain_id}")
    call = {"to": contract, "data": HISTORY_OF_SELECTOR + _address_word(member).hex()}
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


class _JsonRpc:
    """Just enough JSON-RPC over HTTP for the verifier; no web3, no Django."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout, self._id = url, timeout, 0

    def call(self, method: str, *params: Any) -> Any:
        self._id += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)})
        request = urllib.request.Request(self.url, data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise ProofInvalid(f"cannot check the chain: node {self.url} unreachable "
                               f"({type(error).__name__})") from None
        if "error" in answer:
            raise ProofInvalid(f"cannot check the chain: {method} failed: {answer['error'].get('message')}")
        return answer.get("result")


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _unhex(value: str, field: str) -> bytes:
    text = value.removeprefix("0x")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ProofInvalid(f"{field} is not hex") from None
    if field != "salt" and len(raw) != merkle.HASH_SIZE:
        raise ProofInvalid(f"{field} is not a 32-byte hash")
    return raw
