"""The audit entry of one request, allowed or refused: one AuditEvent per access, more for
a request that touched several patients, all in the access's own transaction.

``AccessRecord`` is what the entry says; the door fills it in before the handler runs, the
handler adds what only it knows (the resource read, the versions written, the patients a
search returned). ``write_audit`` appends it to the ledger's outbox
(``ledger.services.audit_append``); if that fails, the request fails and nothing it did is
kept: an access that cannot be audited is refused (``access.endpoint``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from ledger.balp import audit_event_balp
from ledger.services import audit_append

# Not a valid Django username, so no account can claim the unauthenticated requests' entries.
ANONYMOUS = "(anonymous)"


@dataclass
class AccessRecord:
    """What the audit entry says about one request; views fill in what only they know."""

    interaction: str
    resource: str | None = None
    patient_id: str | None = None
    query: str | None = None
    purpose_of_use: str = "TREAT"
    break_glass_reason: str | None = None  # set when a clinician declared an emergency
    # A Bundle's writes: (interaction, stored row with resource_type, logical_id, version_id, patient_id).
    written: list[tuple[str, Any]] = field(default_factory=list)
    # The one patient a search names in its criteria (for an emergency: whose record it opens).
    named_patient: str | None = None
    # Every patient whose records a multi-patient read returned: each gets an entry of its own.
    read_patients: set[str] = field(default_factory=set)


def write_audit(request: HttpRequest, record: AccessRecord, response: HttpResponse) -> None:
    """The request's AuditEvent; a Bundle's writes and a multi-patient read's patients get one more each.

    Every resource a Bundle wrote is named with what was done to it: those outside any
    patient's compartment in the request's own entry, the others in an entry per patient,
    so that ``AuditEvent?patient=`` shows a patient every write to their record.
    """
    status = response.status_code
    outcome = "0" if status < 400 else "4" if status < 500 else "8"
    user = request.user
    agent = user.get_username() if user.is_authenticated else ANONYMOUS
    now = timezone.now()
    by_patient: dict[str | None, list[tuple[str, str]]] = {}
    for interaction, row in record.written if status < 400 else ():
        reference = f"{row.resource_type}/{row.logical_id}/_history/{row.version_id}"
        by_patient.setdefault(row.patient_id, []).append((reference, interaction))
    # An unauthenticated request is nobody's access to a patient's record.
    own_patient = record.patient_id if user.is_authenticated else None
    for patient_id in record.read_patients - {own_patient} if status < 400 else ():
        by_patient.setdefault(patient_id, [])
    for patient_id, written in [(own_patient, by_patient.pop(None, [])), *by_patient.items()]:
        event = audit_event_balp(
            interaction=record.interaction, agent=agent, outcome=outcome, recorded=now,
            observer=settings.NODE_NAME, resource=record.resource, patient=patient_id, written=written,
            query=record.query, outcome_description=None if status < 400 else f"HTTP {status}",
            purpose_of_use=record.purpose_of_use, break_glass=record.break_glass_reason is not None,
            break_glass_reason=record.break_glass_reason, consent_tokens=_consent_tokens(request),
        )
        audit_append(event=event, patient_id=patient_id, agent=agent, outcome=outcome, recorded=now)


def _consent_tokens(request: HttpRequest) -> list[str]:
    """The consent tokens the access rules relied on (``policy.AccessContext.consent_tokens``)."""
    ctx = getattr(request, "access_context", None)
    return sorted(set(ctx.consent_tokens)) if ctx is not None else []
