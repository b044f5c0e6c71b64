"""From a patient's Consents to consent tokens: the write side, run in the Consent's transaction.

``ehr`` calls ``consent_patient_lock``, reads the patient's owner and that owner's active
Consents, and hands them as plain values (``ledger.consents.rules``) to
``consent_tokens_refresh``, which recomputes what they permit and deny and brings the mirror
in line: a new permit becomes a *pending* token with a queued grant
transaction (it counts only once the listener sees the grant confirmed); a permit that is
gone (Consent revoked, deleted, changed, or overridden by a deny) is *revoked at once*, in
this transaction, and its revoke transaction queued. Denies are stored for the check.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from ledger.consents.rules import DENY, PERMIT, ConsentRule, ConsentVersion
from ledger.locks import transaction_lock
from ledger.models import ConsentChainTx, ConsentDeny, ConsentToken
from ledger.verify import consent_format as fmt

# Key space of per-patient transaction locks ("CARKCONS" folded into the high bits).
_PATIENT_LOCK_BASE = 0x434F4E53 << 32


@dataclass(frozen=True)
class _Permit:
    consent_id: str
    consent_version: int
    consent_hash: bytes
    organization_id: str | None
    rule: ConsentRule

    @property
    def key(self) -> tuple:
        return (self.consent_id, self.rule.grantee, self.rule.purpose, self.rule.valid_from,
                self.rule.valid_until)


def consent_patient_lock(*, patient_id: str) -> None:
    """Serialize the consent refreshes of one patient (this transaction, re-entrant).

    Taken before the patient's Consents are read, so a concurrent refresh's Consent is
    committed, and seen, before this one decides what stands.
    """
    transaction_lock(_PATIENT_LOCK_BASE | int.from_bytes(hashlib.sha256(patient_id.encode()).digest()[:4], "big"))


def consent_tokens_refresh(*, patient_id: str, owner: str | None, consents: list[ConsentVersion]) -> None:
    """Align the patient's tokens and denies with its owner's active Consents (same transaction).

    Only the Consents of the organization managing the patient count
    (``ledger.consents.check`` says why); ``ehr`` sends only those, and any other is ignored.
    """
    consent_patient_lock(patient_id=patient_id)
    permits, denies = _current_rules(patient_id, [c for c in consents if c.organization_id == owner])
    effective = {p.key: p for p in permits if not any(_covers(deny, p.rule) for deny in denies)}
    now = timezone.now()
    standing = ConsentToken.objects.select_for_update().filter(patient_id=patient_id).exclude(
        status=ConsentToken.REVOKED)
    kept = set()
    for token in standing:
        key = (token.consent_id, token.grantee, token.purpose, token.valid_from, token.valid_until)
        if key in effective:
            kept.add(key)
        else:
            token_revoke(token=token, now=now)
    for key, permit in effective.items():
        if key not in kept:
            _token_create(patient_id, permit)
    ConsentDeny.objects.filter(patient_id=patient_id).delete()
    ConsentDeny.objects.bulk_create(denies)


def consent_tokens_owner_move(*, patient_id: str, organization_id: str | None) -> None:
    """The patient's compartment, its Consents with it, moved to another hospital: so do its tokens.

    A token stores its Consent's organization, which the check compares with the patient's
    owner; ``ehr`` moves the Consents of a patient whose managing organization changes.
    """
    ConsentToken.objects.filter(patient_id=patient_id).exclude(organization_id=organization_id).update(
        organization_id=organization_id)


def _current_rules(patient_id: str, consents: list[ConsentVersion]) -> tuple[list[_Permit], list[ConsentDeny]]:
    permits, denies = [], []
    for consent in consents:
        for rule in consent.rules:
            if rule.kind == PERMIT:
                permits.append(_Permit(consent.consent_id, consent.version, consent.consent_hash,
                                       consent.organization_id, rule))
            elif rule.kind == DENY:
                denies.append(ConsentDeny(
                    patient_id=patient_id, consent_id=consent.consent_id, consent_version=consent.version,
                    grantee=rule.grantee, purpose=rule.purpose, valid_from=rule.valid_from,
                    valid_until=rule.valid_until))
    return permits, denies


def _covers(deny: ConsentDeny, permit: ConsentRule) -> bool:
    """The deny overrides the permit over its whole period (partial overlaps: at check time)."""
    return ((deny.grantee is None or deny.grantee == permit.grantee)
            and (deny.purpose is None or deny.purpose == permit.purpose)
            and _not_after(deny.valid_from, permit.valid_from)
            and _not_before(deny.valid_until, permit.valid_until))


def _not_after(deny_start: datetime | None, permit_start: datetime | None) -> bool:
    return deny_start is None or (permit_start is not None and deny_start <= permit_start)


def _not_before(deny_end: datetime | None, permit_end: datetime | None) -> bool:
    return deny_end is None or (permit_end is not None and deny_end >= permit_end)


def _token_create(patient_id: str, permit: _Permit) -> ConsentToken:
    rule = permit.rule
    serial = ConsentToken.objects.filter(patient_id=patient_id, consent_id=permit.consent_id,
                                         grantee=rule.grantee, purpose=rule.purpose).count()
    pseudonym = fmt.pseudonym(settings.CONSENT_PSEUDONYM_KEY.encode(), patient_id)
    terms = fmt.terms(pseudonym=pseudonym, grantee=fmt.grantee_hash(rule.grantee),
                      purpose=fmt.purpose_bytes(rule.purpose), consent_hash=permit.consent_hash,
                      serial=serial)
    token = ConsentToken.objects.create(
        patient_id=patient_id, organization_id=permit.organization_id,
        consent_id=permit.consent_id, consent_version=permit.consent_version,
        consent_hash=permit.consent_hash, grantee=rule.grantee, purpose=rule.purpose,
        valid_from=rule.valid_from, valid_until=rule.valid_until, serial=serial, pseudonym=pseudonym, terms=terms,
    )
    ConsentChainTx.objects.create(token=token, action=ConsentChainTx.GRANT)
    return token


def token_revoke(*, token: ConsentToken, now: datetime) -> None:
    """Revoked for access now; on chain when its revoke is mined (nothing to send if never signed)."""
    token.status, token.revoked_at = ConsentToken.REVOKED, now
    token.save(update_fields=["status", "revoked_at"])
    unsigned = ConsentChainTx.objects.filter(token=token, action=ConsentChainTx.GRANT, status="queued")
    if unsigned.update(status="cancelled"):
        return
    ConsentChainTx.objects.create(token=token, action=ConsentChainTx.REVOKE)
