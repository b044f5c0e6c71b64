"""From a patient's Consents to consent tokens: the write side, run in the Consent's transaction.

``consent_tokens_refresh`` recomputes what the patient's active Consents permit and deny and
brings the mirror in line: a new permit becomes a *pending* token with a queued grant
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

from ehr import fhirjson
from ehr.consent import DENY, PERMIT, ConsentRule, consent_rules
from ehr.models import Resource
from ledger import consent_format as fmt
from ledger.locks import transaction_lock
from ledger.models import ConsentChainTx, ConsentDeny, ConsentToken

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


def consent_tokens_refresh(*, patient_ids: set[str | None]) -> None:
    """Align tokens and denies with the current Consents of each patient (same transaction)."""
    for patient_id in sorted(p for p in patient_ids if p):
        _refresh_patient(patient_id)


def _refresh_patient(patient_id: str) -> None:
    transaction_lock(_PATIENT_LOCK_BASE | int.from_bytes(hashlib.sha256(patient_id.encode()).digest()[:4], "big"))
    permits, denies = _current_rules(patient_id)
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


def _current_rules(patient_id: str) -> tuple[list[_Permit], list[ConsentDeny]]:
    permits, denies = [], []
    # Only the patient's hospital's Consents count (ledger.consents.check says why).
    owner = (Resource.objects.filter(resource_type="Patient", logical_id=patient_id, deleted=False)
             .values_list("organization_id", flat=True).first())
    consents = (Resource.objects.filter(resource_type="Consent", patient_id=patient_id, deleted=False,
                                        organization_id=owner)
                .values_list("logical_id", "version_id", "text", "organization_id"))
    for consent_id, version, text, organization_id in consents:
        for rule in consent_rules(fhirjson.loads(text)):
            if rule.kind == PERMIT:
                permits.append(_Permit(consent_id, version, fmt.consent_hash(text), organization_id, rule))
            elif rule.kind == DENY:
                denies.append(ConsentDeny(
                    patient_id=patient_id, consent_id=consent_id, consent_version=version,
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
