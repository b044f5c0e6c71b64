"""Whether the stored audit log still holds: its hash chain, its batch roots and their anchors.

``manage.py ledger_verify`` runs ``audit_verify`` from seq 1. It recomputes what the
sequencer and the anchoring job wrote, with the offline verifier's own functions
(``ledger.verify``), and names the first entry or batch that differs.
"""

from __future__ import annotations

import re

from ledger.models import AnchorBatch, AuditEntry
from ledger.selectors import audit_confirmed_batches
from ledger.verify import audit_check, audit_format, merkle
from ledger.verify.audit_proof import anchor_fields
from ledger.verify.errors import ProofInvalid


class LedgerDiffers(Exception):
    """The stored log does not match its own hash chain, its roots or the chain."""


# What an operator reads when the chain lost anchors the database counts as confirmed.
REORG_HINT = ("the chain no longer holds this anchor (a reorganization, or a node restored from an "
              "older state): run manage.py ledger_reanchor, or wait for the anchoring beat "
              "(ledger.anchor_audit) to re-anchor it")
_LOST_ON_CHAIN = ("is not on the chain", "is not in the stated block", "is not on the canonical chain")


def audit_verify(*, rpc_url: str | None, chunk: int = 5_000) -> tuple[int, int]:
    """Recompute the hash chain from seq 1 and each confirmed batch's root; check its anchor.

    Returns (entries, batches) checked; raises ``LedgerDiffers`` naming the first entry
    (seq and id) that differs. ``rpc_url=None`` skips the on-chain checks: each batch's
    ``Anchored`` event, then each member's on-chain accumulator against all its batches.
    """
    batches = audit_confirmed_batches()
    ranges = {batch.first_seq: batch for batch in batches}
    expected, prev, leaves, batch = 0, audit_format.GENESIS_HASH, [], None
    rows = (AuditEntry.objects.filter(seq__isnull=False).order_by("seq")
            .values_list("seq", "id", "event", "prev_hash", "entry_hash", "leaf_hash", "auditsalt__salt",
                         "hash_version")
            .iterator(chunk_size=chunk))
    for seq, entry_id, event, prev_hash, stored_hash, leaf, salt, version in rows:
        expected += 1
        where = f"entry seq {expected} (id {entry_id})"
        if seq != expected:
            raise LedgerDiffers(f"{where}: the sequence jumps to {seq}")
        data = event.encode()
        if bytes(prev_hash) != prev:
            raise LedgerDiffers(f"{where}: prev_hash does not match the previous entry hash")
        prev = _expected_entry_hash(where, version, prev, seq, data, bytes(leaf),
                                    bytes(salt) if salt is not None else None)
        if bytes(stored_hash) != prev:
            raise LedgerDiffers(f"{where}: the entry hash does not match its content")
        if salt is not None and audit_format.leaf_hash(bytes(salt), seq, data) != bytes(leaf):
            raise LedgerDiffers(f"{where}: the leaf hash does not match its content")
        batch = ranges.get(seq, batch)
        if batch is not None and batch.first_seq <= seq <= batch.last_seq:
            leaves.append(bytes(leaf))
            if seq == batch.last_seq:
                _check_batch(batch, leaves, rpc_url)
                leaves = []
    missing = [b for b in batches if b.last_seq > expected]
    if missing:
        raise LedgerDiffers(f"batch {missing[0].first_seq}..{missing[0].last_seq}: entries are missing")
    if rpc_url is not None:
        _check_histories(batches, rpc_url)
    return expected, len(batches)


def _expected_entry_hash(where: str, version: int | None, prev: bytes, seq: int, event: bytes,
                         leaf: bytes, salt: bytes | None) -> bytes:
    """The entry hash recomputed by the entry's own hash version (docs/audit-ledger.md).

    Version 2 chains the leaf, recomputed from the salted event while the salt exists; once
    it is erased only the stored leaf is left, and the event is no longer covered (that is
    what makes the erasure real). NULL on a sequenced row is an entry sequenced by code
    older than version 2: version 1.
    """
    if version in (None, audit_format.HASH_V1):
        return audit_format.entry_hash(prev, seq, event)
    if version != audit_format.HASH_V2:
        raise LedgerDiffers(f"{where}: unknown hash version {version}")
    return audit_format.chain_hash(prev, seq, audit_format.leaf_hash(salt, seq, event) if salt is not None else leaf)


def _check_batch(batch: AnchorBatch, leaves: list[bytes], rpc_url: str | None) -> None:
    where = f"batch {batch.first_seq}..{batch.last_seq}"
    root = merkle.root(leaves)
    if root != bytes(batch.root):
        raise LedgerDiffers(f"{where} (entry seq {batch.first_seq} onwards): the recomputed root "
                            f"differs from the anchored root")
    if rpc_url is None:
        return
    try:
        audit_check.check_anchor(rpc_url, anchor_fields(batch), root)
    except ProofInvalid as error:
        lost = any(marker in str(error) for marker in _LOST_ON_CHAIN)
        raise LedgerDiffers(f"{where}: on chain, {error}" + (f"; {REORG_HINT}" if lost else "")) from None


def _check_histories(confirmed: list[AnchorBatch], rpc_url: str) -> None:
    """Per (chain, contract, member): the chain's accumulator covers exactly our batches.

    The per-batch events show that each batch is on chain; this shows that nothing else
    is (an anchor the database lost or never made). Batches still in flight may already be
    mined, so they are offered after the confirmed ones.
    """
    groups: dict[tuple[int, str, str], list[AnchorBatch]] = {}
    for batch in confirmed:
        groups.setdefault((batch.chain_id, batch.contract, batch.signer), []).append(batch)
    for (chain_id, contract, signer), mine in groups.items():
        in_flight = AnchorBatch.objects.filter(chain_id=chain_id, contract=contract, signer=signer,
                                               status__in=("pending", "sent", "lost")).order_by("first_seq")
        ranges = [(b.first_seq, b.last_seq, bytes(b.root)) for b in [*mine, *in_flight]]
        try:
            audit_check.check_history(rpc_url, chain_id=chain_id, contract=contract, member=signer,
                                 ranges=ranges, confirmed=len(mine))
        except ProofInvalid as error:
            raise LedgerDiffers(f"anchors of {signer} on {contract}: on chain, {error}"
                                + _missing_anchors_hint(error, mine)) from None


def _missing_anchors_hint(error: ProofInvalid, confirmed: list[AnchorBatch]) -> str:
    """Name the first confirmed batch the chain's history no longer counts, when that is the case."""
    counted = re.match(r"member \S+ has (\d+) anchors", str(error))
    if counted is None or int(counted.group(1)) >= len(confirmed):
        return ""
    first = confirmed[int(counted.group(1))]
    return f"; batch {first.first_seq}..{first.last_seq} is the first not counted: {REORG_HINT}"
