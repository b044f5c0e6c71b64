"""Writes of the ledger app, each in the caller's transaction or its own.

- ``audit``: append an access (request path), sequence and hash (worker).
- ``consent_tokens``: a patient's Consents (plain values from ``ehr``) to tokens and denies.
- ``patient_owners``: the mirror of who manages each patient, for the consent check.
- ``contracts``: deploy the contracts once per chain.
"""

from .audit import audit_append, audit_sequence
from .consent_tokens import (
    consent_patient_lock,
    consent_tokens_owner_move,
    consent_tokens_refresh,
    token_revoke,
)
from .contracts import contracts_deploy
from .patient_owners import patient_owner_remove, patient_owners_set

__all__ = [
    "audit_append",
    "audit_sequence",
    "consent_patient_lock",
    "consent_tokens_owner_move",
    "consent_tokens_refresh",
    "contracts_deploy",
    "patient_owner_remove",
    "patient_owners_set",
    "token_revoke",
]
