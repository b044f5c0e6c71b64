"""The audit log's formats: canonical JSON, the salted leaf, the hash chain and the accumulator.

The node sequences and anchors with these functions and the verifier recomputes them, so both
sides compute the same bytes. docs/audit-ledger.md has the formats.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import merkle

# ``AuditEntry.hash_version``: how an entry's chain hash was computed (docs/audit-ledger.md).
# 1 (entries sequenced before migration 0005): over the event, unsalted, so it confirms a
# guessed event and is never put in a proof; 2: over the salted leaf.
HASH_V1, HASH_V2 = 1, 2
GENESIS_HASH = bytes(32)


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
    return hashlib.sha256(address_word(contract) + address_word(member)).digest()


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


def address_word(address: str) -> bytes:
    return bytes.fromhex(address.lower().removeprefix("0x")).rjust(32, b"\0")
