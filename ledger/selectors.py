"""Reads of the ledger app: audit entries, the material of their proofs, consent tokens, deployments.

Writes live in ``ledger.services``; the pure formats and checks in ``ledger.verify``.
"""

from __future__ import annotations

from pathlib import Path

from django.db.models import Q

from .deployments import read_deployments
from .models import AnchorBatch, AuditEntry, AuditSalt, ConsentToken
from .verify.audit_format import HASH_V2
from .verify.audit_proof import anchor_fields, proof_document

# Roles (``AccessProfile.role`` values) that read consent token proofs (docs/consent.md).
DPO, PATIENT, CLINICIAN, INTEGRATION = "dpo", "patient", "clinician", "integration"


class ProofUnavailable(Exception):
    """The entry has no proof yet (not sequenced, or its batch is not confirmed)."""

    def __init__(self, message: str, status: dict) -> None:
        super().__init__(message)
        self.status = status


def deployed_contracts(*, registry: Path, chain_id: int) -> dict[str, dict]:
    """Contract name → deployment entry (address, transaction, block) on this chain."""
    return read_deployments(registry, chain_id)


# --- audit entries ---------------------------------------------------------------------------

def audit_entry_get(*, entry_id: int, within: Q | None = None) -> AuditEntry | None:
    """The entry, if it exists and (given ``within``, the caller's readable entries) is readable."""
    entries = AuditEntry.objects.select_related("batch").filter(id=entry_id)
    return (entries.filter(within) if within is not None else entries).first()


def audit_chain_is_salted(*, entry: AuditEntry) -> bool:
    """Whether the entry's prev_hash and entry_hash are both hash version 2 (safe to show).

    A version 1 hash is over the bare event: shown, it would confirm a guessed event, the
    entry's own (entry_hash) or its predecessor's (prev_hash).
    """
    if entry.hash_version != HASH_V2:
        return False
    before = AuditEntry.objects.filter(seq=entry.seq - 1).values_list("hash_version", flat=True)
    return entry.seq == 1 or before.first() == HASH_V2


def audit_salt_get(*, entry: AuditEntry) -> bytes | None:
    salt = AuditSalt.objects.filter(entry=entry).values_list("salt", flat=True).first()
    return bytes(salt) if salt is not None else None


def audit_range_leaves(*, first_seq: int, last_seq: int) -> list[bytes]:
    """Leaf hashes of seq first..last in order: the input of the range's Merkle root."""
    leaves = (AuditEntry.objects.filter(seq__gte=first_seq, seq__lte=last_seq)
              .order_by("seq").values_list("leaf_hash", flat=True))
    result = [bytes(leaf) for leaf in leaves]
    if len(result) != last_seq - first_seq + 1:
        raise ValueError(f"seq {first_seq}..{last_seq} is not fully sequenced")
    return result


def audit_last_seq() -> int:
    last = AuditEntry.objects.filter(seq__isnull=False).order_by("-seq").values_list("seq", flat=True)
    return last.first() or 0


def audit_confirmed_batches() -> list[AnchorBatch]:
    return list(AnchorBatch.objects.filter(status="confirmed").order_by("first_seq"))


# --- proof material --------------------------------------------------------------------------

def audit_proof(*, entry: AuditEntry, include_salt: bool = True) -> dict:
    """The proof document of one anchored entry; ``ProofUnavailable`` until it is anchored.

    The event text goes with the salt only: without the salt the event cannot be tied to
    the on-chain root anyway, and a caller not allowed the salt sees hashes only. Only
    salted hashes ever go out: the chain hashes only when both the entry's and its
    predecessor's are hash version 2 (a version 1 hash confirms a guessed event).
    """
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


# --- consent tokens --------------------------------------------------------------------------

def consent_tokens_readable(*, role: str, organization_id: str | None, patient_id: str | None) -> Q:
    """The tokens whose proof the caller may read (docs/consent.md), from its role and links.

    The DPO all, a patient their own, a clinician or integration those of its organization's
    patients and those granted to its organization; nobody else any (administrators
    included: least privilege, as for the audit log). A proof names the patient's
    pseudonym, so it goes no wider than that.
    """
    if role == DPO:
        return Q()
    if role == PATIENT and patient_id:
        return Q(patient_id=patient_id)
    if role in (CLINICIAN, INTEGRATION) and organization_id:
        return Q(organization_id=organization_id) | Q(grantee=f"Organization/{organization_id}")
    return Q(pk__in=[])


def consent_token_get(*, token_id: str, within: Q | None = None) -> ConsentToken | None:
    """The token, if it exists and (given ``within``, the caller's readable tokens) is readable."""
    tokens = ConsentToken.objects.filter(token_id=token_id)
    return (tokens.filter(within) if within is not None else tokens).first()
