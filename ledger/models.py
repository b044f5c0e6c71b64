"""The audit outbox and its anchors.

``AuditEntry`` is append-only in the database itself (triggers in migration 0002): an
entry is inserted once, sequenced once (seq and hashes set while ``seq`` is NULL) and
pointed at its anchor batch; nothing else may change and nothing may be deleted.
``AuditSalt`` may be deleted (erasure by crypto-shredding) but never updated.
``AnchorBatch`` is the anchoring job's mutable row. Formats: docs/audit-ledger.md.
"""

from __future__ import annotations

from django.db import models

from .chain.outbox import ChainTransaction


class AnchorBatch(ChainTransaction):
    """One anchor transaction for a contiguous seq range (an outbox row, ``ledger.chain.outbox``)."""

    first_seq = models.BigIntegerField(unique=True)
    last_seq = models.BigIntegerField()
    root = models.BinaryField()
    # "pending" (signed, persisted, not yet sent) | "sent" | "confirmed" | "replaced"
    # | "lost" (was confirmed, the chain no longer has it: re-anchored by the next ticks)
    status = models.CharField(max_length=12)
    # Signed when created, so never NULL (the outbox allows rows decided before signing).
    chain_id = models.BigIntegerField()
    contract = models.CharField(max_length=42)
    signer = models.CharField(max_length=42)
    nonce = models.BigIntegerField()
    raw_tx = models.BinaryField()
    tx_hash = models.CharField(max_length=66)
    max_fee_per_gas = models.DecimalField(max_digits=40, decimal_places=0)
    max_priority_fee_per_gas = models.DecimalField(max_digits=40, decimal_places=0)
    # created <= sent_at <= confirmed_at, all from the anchoring tick's one clock (not the
    # database's), so the row tells the order in which things happened.
    confirmed_at = models.DateTimeField(null=True)
    # The last time a confirmed anchor was found missing from the chain, and how many times.
    lost_at = models.DateTimeField(null=True)
    reorgs = models.PositiveIntegerField(default=0)

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
    # How entry_hash was computed, set with it: 1 over the event (before migration 0005), 2 over
    # the salted leaf (docs/audit-ledger.md). NULL while unsequenced.
    hash_version = models.SmallIntegerField(null=True)
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


class ConsentToken(models.Model):
    """Mirror of one consent token: a permit (grantee, purpose, period) of a patient's Consent.

    The chain is the source of truth; this row makes checks fast. It counts for access only
    while ``status`` is "active" (grant confirmed on chain) and never once "revoked" (set
    at once, in the EHR, before the revoke is mined). Fields: docs/consent.md.
    """

    PENDING, ACTIVE, REVOKED = "pending", "active", "revoked"

    patient_id = models.CharField(max_length=64)
    organization_id = models.CharField(max_length=64, null=True)  # the patient's hospital
    consent_id = models.CharField(max_length=64)
    consent_version = models.IntegerField()
    consent_hash = models.BinaryField()  # SHA-256 of the stored Consent version
    grantee = models.CharField(max_length=128)  # "Organization/b" | "ResearchStudy/x"
    purpose = models.CharField(max_length=16)  # HL7 v3 PurposeOfUse code
    valid_from = models.DateTimeField(null=True)  # None = no start (0 on chain)
    valid_until = models.DateTimeField(null=True)  # exclusive; None = no end (0 on chain)
    serial = models.IntegerField(default=0)
    pseudonym = models.BinaryField()
    terms = models.BinaryField()
    status = models.CharField(max_length=8, default=PENDING)
    created = models.DateTimeField(auto_now_add=True)
    # Known once the grant is signed (chain id, contract and issuer are part of the id).
    token_id = models.CharField(max_length=66, null=True, unique=True)
    chain_id = models.BigIntegerField(null=True)
    contract = models.CharField(max_length=42, null=True)
    issuer = models.CharField(max_length=42, null=True)
    grant_tx_hash = models.CharField(max_length=66, null=True)
    grant_block = models.BigIntegerField(null=True)
    confirmed_at = models.DateTimeField(null=True)
    revoked_at = models.DateTimeField(null=True)
    revoke_tx_hash = models.CharField(max_length=66, null=True)
    revoke_block = models.BigIntegerField(null=True)

    class Meta:
        indexes = [
            models.Index(fields=["grantee", "purpose", "patient_id"], name="consenttoken_check",
                         condition=models.Q(status="active")),
            models.Index(fields=["patient_id", "status"], name="consenttoken_patient"),
        ]

    def __str__(self) -> str:
        return f"consent token {self.pk} {self.grantee} {self.purpose} ({self.status})"


class ConsentDeny(models.Model):
    """A deny provision of an active Consent: it overrides every permit it covers.

    ``grantee`` / ``purpose`` None means any. Replaced whenever the patient's Consents change.
    """

    patient_id = models.CharField(max_length=64, db_index=True)
    consent_id = models.CharField(max_length=64)
    consent_version = models.IntegerField()
    grantee = models.CharField(max_length=128, null=True)
    purpose = models.CharField(max_length=16, null=True)
    valid_from = models.DateTimeField(null=True)
    valid_until = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"consent deny {self.patient_id} {self.grantee or '*'} {self.purpose or '*'}"


class ConsentChainTx(ChainTransaction):
    """Outbox of consent transactions (``ledger.chain.outbox``): signed and persisted before sent.

    "queued" (decided, not signed) → "sent" (bytes persisted, broadcast) → "mined";
    "cancelled" when a queued grant was revoked before it was ever signed.
    """

    GRANT, REVOKE = "grant", "revoke"
    SIGNED, SENT = "sent", "sent"
    IN_FLIGHT = ("sent",)

    token = models.ForeignKey(ConsentToken, on_delete=models.PROTECT, related_name="transactions")
    action = models.CharField(max_length=8)
    status = models.CharField(max_length=10, default="queued")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["status", "id"], name="consentchaintx_open")]

    def __str__(self) -> str:
        return f"consent {self.action} tx {self.pk} ({self.status})"


class ChainCursor(models.Model):
    """The last block a chain listener has processed (one row per listener)."""

    name = models.CharField(max_length=32, primary_key=True)
    chain_id = models.BigIntegerField()
    contract = models.CharField(max_length=42)
    block = models.BigIntegerField()


class PatientOwner(models.Model):
    """Which organization manages a patient now: ``ehr``'s Patient owner, mirrored on every write.

    The consent check compares it with the organization of a token's Consent, so a Consent
    another hospital wrote for the patient's id never opens anything. ``ehr.services`` keeps it
    in the write's own transaction: a Patient created, changed, claimed or deleted (no row).
    """

    patient_id = models.CharField(max_length=64, primary_key=True)
    organization_id = models.CharField(max_length=64, null=True)

    def __str__(self) -> str:
        return f"Patient/{self.patient_id} managed by {self.organization_id}"
