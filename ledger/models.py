"""The audit outbox and its anchors.

``AuditEntry`` is append-only in the database itself (triggers in migration 0002): an
entry is inserted once, sequenced once (seq and hashes set while ``seq`` is NULL) and
pointed at its anchor batch; nothing else may change and nothing may be deleted.
``AuditSalt`` may be deleted (erasure by crypto-shredding) but never updated.
``AnchorBatch`` is the anchoring job's mutable row. Formats: docs/audit-ledger.md.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models


class AnchorBatch(models.Model):
    """One anchor transaction for a contiguous seq range."""

    first_seq = models.BigIntegerField(unique=True)
    last_seq = models.BigIntegerField()
    root = models.BinaryField()
    # "pending" (signed, persisted, not yet sent) | "sent" | "confirmed" | "replaced"
    status = models.CharField(max_length=12)
    chain_id = models.BigIntegerField()
    contract = models.CharField(max_length=42)
    signer = models.CharField(max_length=42)
    nonce = models.BigIntegerField()
    raw_tx = models.BinaryField()
    tx_hash = models.CharField(max_length=66)
    max_fee_per_gas = models.DecimalField(max_digits=40, decimal_places=0)
    max_priority_fee_per_gas = models.DecimalField(max_digits=40, decimal_places=0)
    created = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True)
    attempts = models.PositiveIntegerField(default=0)
    block_number = models.BigIntegerField(null=True)
    block_hash = models.CharField(max_length=66, null=True)
    confirmed_at = models.DateTimeField(null=True)
    # Hashes of earlier signings of this batch (same nonce, lower fees) that a replacement superseded.
    replaced_tx_hashes = ArrayField(models.CharField(max_length=66), default=list, blank=True)

    def __str__(self) -> str:
        return f"anchor {self.first_seq}..{self.last_seq} ({self.status})"


class AuditEntry(models.Model):
    """One access = one FHIR AuditEvent (IHE BALP shape), written in the access's transaction."""

    recorded = models.DateTimeField()
    event = models.TextField()
    patient_id = models.CharField(max_length=64, null=True, db_index=True)
    agent = models.CharField(max_length=150)
    outcome = models.CharField(max_length=2)
    seq = models.BigIntegerField(null=True, unique=True)
    prev_hash = models.BinaryField(null=True)
    entry_hash = models.BinaryField(null=True)
    leaf_hash = models.BinaryField(null=True)
    batch = models.ForeignKey(AnchorBatch, null=True, on_delete=models.PROTECT, related_name="entries")

    class Meta:
        indexes = [
            models.Index(fields=["id"], name="auditentry_unsequenced",
                         condition=models.Q(seq__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"audit entry {self.pk} (seq {self.seq})"


class AuditSalt(models.Model):
    """The entry's leaf salt; deleting it makes the on-chain root unlinkable to the entry."""

    entry = models.OneToOneField(AuditEntry, primary_key=True, on_delete=models.CASCADE)
    salt = models.BinaryField()
