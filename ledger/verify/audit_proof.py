"""The audit proof document: one entry's leaf, its Merkle path and the anchor of its range.

Built by the node from its rows (``ledger.selectors.audit_proof``), checked by ``audit_check``.
Schema: docs/audit-ledger.md.
"""

from __future__ import annotations

from typing import Any

from . import merkle

# Proof documents: version 2 (chain hashes over the salted leaf) is written; 1 is still read,
# so proofs handed out before the change keep verifying.
VERSION = 2
VERSIONS = (1, 2)


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
    entry["leaf_hash"] = hex_of(leaves[index])
    if prev_hash is not None and entry_hash is not None:
        entry.update(prev_hash=hex_of(prev_hash), entry_hash=hex_of(entry_hash))
    proof: dict[str, Any] = {"version": VERSION, "entry": entry}
    if salt is not None:
        proof["salt"] = salt.hex()
    proof["merkle"] = {
        "leaf_index": index,
        "tree_size": len(leaves),
        "path": [hex_of(node) for node in merkle.inclusion_path(leaves, index)],
        "root": hex_of(merkle.root(leaves)),
    }
    proof["anchor"] = anchor
    return proof


def hex_of(value: bytes) -> str:
    return "0x" + value.hex()
