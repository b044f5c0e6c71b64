"""The one consent check: does a patient's consent let this grantee use the record for this purpose?

Used by the FHIR access rules (another hospital's clinicians, purpose TREAT), and meant for
research exports (HRESCH) and AI training inclusion. It reads only the PostgreSQL mirror:
a token counts while it is *active* (grant confirmed on chain, not revoked) and the moment
lies in its period, and no deny of the patient covers the grantee, purpose and moment.
Fail closed: no token, a pending grant, a revoked or expired token all answer no.

Only the patient's own hospital's records (the patient's own Consents among them) define the
patient's consent: a token counts only while the Consent it came from (the token stores its
organization) belongs to the organization that manages the patient now (``PatientOwner``, kept
by ehr on every write; no row for a deleted patient). A Consent another hospital wrote for the
same patient id (planted before the patient was registered, say) never opens anything.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from ledger.models import ConsentDeny, ConsentToken, PatientOwner

# The hot path (every read of another hospital's record): one statement, no ORM building.
_CHECK_SQL = """
SELECT t.token_id FROM ledger_consenttoken t
WHERE t.status = 'active' AND t.grantee = %(grantee)s AND t.purpose = %(purpose)s
  AND t.patient_id = %(patient)s
  AND (t.valid_from IS NULL OR t.valid_from <= %(at)s) AND (t.valid_until IS NULL OR t.valid_until > %(at)s)
  AND EXISTS (
    SELECT 1 FROM ledger_patientowner o
    WHERE o.patient_id = t.patient_id AND o.organization_id = t.organization_id)
  AND NOT EXISTS (
    SELECT 1 FROM ledger_consentdeny d
    WHERE d.patient_id = %(patient)s AND (d.grantee IS NULL OR d.grantee = %(grantee)s)
      AND (d.purpose IS NULL OR d.purpose = %(purpose)s)
      AND (d.valid_from IS NULL OR d.valid_from <= %(at)s) AND (d.valid_until IS NULL OR d.valid_until > %(at)s))
LIMIT 1
"""


def consent_check(*, patient_id: str, grantee: str, purpose: str, at: datetime | None = None) -> str | None:
    """The id of a token that allows the use, or None."""
    with connection.cursor() as cursor:
        cursor.execute(_CHECK_SQL, {"patient": patient_id, "grantee": grantee, "purpose": purpose,
                                    "at": at or timezone.now()})
        row = cursor.fetchone()
    return row[0] if row else None


def consented_patients(*, grantee: str, purpose: str, at: datetime | None = None) -> QuerySet:
    """Ids of the patients whose consent allows the use now (a subquery for filters)."""
    moment = at or timezone.now()
    denied = _denies(grantee, purpose, moment).values("patient_id")
    return (_active_tokens(grantee, purpose, moment).exclude(patient_id__in=denied)
            .values("patient_id"))


def consent_tokens_for(*, patient_ids: set[str], grantee: str, purpose: str,
                       at: datetime | None = None) -> list[str]:
    """Token ids that allowed access to these patients (for the audit entry)."""
    moment = at or timezone.now()
    denied = _denies(grantee, purpose, moment).values("patient_id")
    return list(_active_tokens(grantee, purpose, moment).filter(patient_id__in=patient_ids)
                .exclude(patient_id__in=denied).order_by("token_id").values_list("token_id", flat=True))


def _active_tokens(grantee: str, purpose: str, moment: datetime) -> QuerySet:
    return ConsentToken.objects.filter(
        Q(valid_from__isnull=True) | Q(valid_from__lte=moment),
        Q(valid_until__isnull=True) | Q(valid_until__gt=moment),
        Exists(_consent_of_patients_hospital()),
        status=ConsentToken.ACTIVE, grantee=grantee, purpose=purpose,
    )


def _consent_of_patients_hospital() -> QuerySet:
    """The token's patient, if the organization managing it is the one of the token's Consent."""
    return PatientOwner.objects.filter(patient_id=OuterRef("patient_id"),
                                       organization_id=OuterRef("organization_id"))


def _denies(grantee: str, purpose: str, moment: datetime) -> QuerySet:
    return ConsentDeny.objects.filter(
        Q(grantee__isnull=True) | Q(grantee=grantee),
        Q(purpose__isnull=True) | Q(purpose=purpose),
        Q(valid_from__isnull=True) | Q(valid_from__lte=moment),
        Q(valid_until__isnull=True) | Q(valid_until__gt=moment),
    )
