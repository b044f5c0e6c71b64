"""The audit proof as compact bytes: the same fields as the JSON document, fixed-width.

A hashes-only proof at 10⁶ entries per anchor is 943 bytes (the JSON form is ~2.2 KB:
hex doubles every hash). ``GET /api/ledger/audit-events/{id}/proof`` answers it to
``Accept: application/vnd.carrack.audit-proof``; ``carrack-verify audit-proof`` reads either
form. Pure: no Django, no web3. Layout (big-endian), docs/audit-ledger.md:

    "CRKP" | version u8 | flags u8 (1: event and salt follow; 2: prev and entry hash follow)
    entry id u64 | seq u64 | leaf hash | [prev hash | entry hash]      (hashes: 32 bytes)
    leaf index u64 | tree size u64 | path length u8 | path hashes | root
    first seq u64 | last seq u64 | chain id u64 | contract (20) | member (20)
    transaction (32) | block number u64 | block hash (32)
    [salt length u8 | salt | event length u32 | event (UTF-8)]
"""

from __future__ import annotations

import struct

from .audit_proof import VERSIONS
from .errors import ProofInvalid

MAGIC = b"CRKP"
MEDIA_TYPE = "application/vnd.carrack.audit-proof"
_HAS_EVENT = 1
# Version 2: the chain hashes are optional (never given when unsalted); version 1 always has them.
_HAS_CHAIN = 2


def proof_encode(proof: dict) -> bytes:
    """The document's own version: 2 as the server writes it, 1 for a document saved before."""
    entry, tree, anchor, version = proof["entry"], proof["merkle"], proof["anchor"], proof["version"]
    with_event = "salt" in proof
    with_chain = version == 1 or "entry_hash" in entry
    flags = (_HAS_EVENT if with_event else 0) | (_HAS_CHAIN if with_chain and version > 1 else 0)
    chain = [_raw(entry["prev_hash"]), _raw(entry["entry_hash"])] if with_chain else []
    out = [MAGIC, struct.pack(">BB", version, flags),
           struct.pack(">QQ", entry["id"], entry["seq"]), _raw(entry["leaf_hash"]), *chain,
           struct.pack(">QQB", tree["leaf_index"], tree["tree_size"], len(tree["path"])),
           *(_raw(node) for node in tree["path"]), _raw(tree["root"]),
           struct.pack(">QQQ", anchor["first_seq"], anchor["last_seq"], anchor["chain_id"]),
           _raw(anchor["contract"], 20), _raw(anchor["member"], 20), _raw(anchor["transaction"]),
           struct.pack(">Q", anchor["block_number"]), _raw(anchor["block_hash"])]
    if with_event:
        salt, event = bytes.fromhex(proof["salt"]), entry["event"].encode()
        out += [struct.pack(">B", len(salt)), salt, struct.pack(">I", len(event)), event]
    return b"".join(out)


def proof_decode(data: bytes) -> dict:
    """The JSON-shaped proof document (for ``verify_proof``); ``ProofInvalid`` if malformed."""
    reader = _Reader(data)
    if reader.take(4) != MAGIC:
        raise ProofInvalid("not a Carrack binary audit proof")
    version, flags = reader.unpack(">BB")
    if version not in VERSIONS or flags & ~(_HAS_EVENT | (_HAS_CHAIN if version > 1 else 0)):
        raise ProofInvalid(f"unsupported binary proof version {version} or flags {flags:#x}")
    entry_id, seq = reader.unpack(">QQ")
    entry = {"id": entry_id, "seq": seq, "leaf_hash": reader.hash()}
    if version == 1 or flags & _HAS_CHAIN:
        entry.update(prev_hash=reader.hash(), entry_hash=reader.hash())
    leaf_index, tree_size, length = reader.unpack(">QQB")
    tree = {"leaf_index": leaf_index, "tree_size": tree_size,
            "path": [reader.hash() for _ in range(length)], "root": reader.hash()}
    first, last, chain_id = reader.unpack(">QQQ")
    anchor = {"first_seq": first, "last_seq": last, "chain_id": chain_id,
              "contract": reader.hash(20), "member": reader.hash(20), "transaction": reader.hash(),
              "block_number": reader.unpack(">Q")[0], "block_hash": reader.hash()}
    proof: dict = {"version": version, "entry": entry}
    if flags & _HAS_EVENT:
        proof["salt"] = reader.take(reader.unpack(">B")[0]).hex()
        entry["event"] = reader.take(reader.unpack(">I")[0]).decode()
    if reader.left():
        raise ProofInvalid("trailing bytes after the proof")
    proof.update(merkle=tree, anchor=anchor)
    return proof


def _raw(value: str, size: int = 32) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != size:
        raise ValueError(f"expected {size} bytes, got {len(raw)}")
    return raw


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise ProofInvalid("the binary proof is truncated")
        chunk = self.data[self.at:self.at + size]
        self.at += size
        return chunk

    def unpack(self, layout: str) -> tuple:
        return struct.unpack(layout, self.take(struct.calcsize(layout)))

    def hash(self, size: int = 32) -> str:
        return "0x" + self.take(size).hex()

    def left(self) -> int:
        return len(self.data) - self.at
