"""Consent rules as plain values: what ``ehr`` reads from a FHIR Consent and hands to the ledger.

The ledger knows no FHIR: ``ehr.consent.consent_rules`` turns a Consent into ``ConsentRule``s
and ``ehr`` sends each of the patient's owner's active Consents as one ``ConsentVersion`` to
``ledger.services.consent_tokens_refresh``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

PERMIT, DENY = "permit", "deny"


@dataclass(frozen=True)
class ConsentRule:
    """One permit or deny; ``None`` grantee or purpose (denies only) means any."""

    kind: str
    grantee: str | None
    purpose: str | None
    valid_from: datetime | None
    valid_until: datetime | None  # exclusive


@dataclass(frozen=True)
class ConsentVersion:
    """One stored Consent version: its id, version, text hash, owner and rules."""

    consent_id: str
    version: int
    consent_hash: bytes  # ledger.verify.consent_format.consent_hash of the stored text
    organization_id: str | None
    rules: tuple[ConsentRule, ...]
