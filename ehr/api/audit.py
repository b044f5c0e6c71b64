"""Every FHIR interaction, allowed or refused, becomes one AuditEvent in the access's transaction.

The view's work runs on a savepoint; whatever happens to it, the audit entry is written
in the enclosing request transaction. If the entry cannot be written, the request fails
and nothing it did is kept: an access that cannot be audited is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from ehr.access.policy import BREAK_GLASS_HEADER
from ehr.fhir import ID_PATTERN
from ehr.models import Resource
from ledger.balp import audit_event_balp
from ledger.services import audit_append

# (view kind, HTTP method) → FHIR restful-interaction code
INTERACTIONS = {
    ("metadata", "GET"): "capabilities",
    ("system", "GET"): "search-system",
    ("system", "POST"): "transaction",
    ("system-search", "POST"): "search-system",
    ("type-search", "POST"): "search-type",
    ("type", "GET"): "search-type",
    ("type", "POST"): "create",
    ("type", "PUT"): "update",
    ("instance", "GET"): "read",
    ("instance", "HEAD"): "read",
    ("instance", "PUT"): "update",
    ("instance", "PATCH"): "patch",
    ("instance", "DELETE"): "delete",
    ("vread", "GET"): "vread",
    ("history", "GET"): "history",
    ("everything", "GET"): "operation",
    ("auditevent-search", "GET"): "search-type",
    ("auditevent", "GET"): "read",
}
PATIENT_SEARCH_PARAMS = ("patient", "subject", "_id")
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
    written: list[tuple[str, Resource]] = field(default_factory=list)  # a Bundle's writes
    # The one patient a search names in its criteria (for an emergency: whose record it opens).
    named_patient: str | None = None
    # Every patient whose records a multi-patient read returned: each gets an entry of its own.
    read_patients: set[str] = field(default_factory=set)


def access_record(request: HttpRequest, kind: str, kwargs: dict) -> AccessRecord:
    interaction = INTERACTIONS.get((kind, request.method), "read")
    resource_type, logical_id = kwargs.get("resource_type"), kwargs.get("logical_id")
    if kind == "everything":
        resource_type = "Patient"
    record = AccessRecord(interaction=interaction)
    if resource_type and logical_id:
        record.resource = f"{resource_type}/{logical_id}"
        record.patient_id = logical_id if resource_type == "Patient" else None
    elif interaction.startswith("search"):
        # The patient named by the criteria is not recorded as the entry's patient: a search
        # names a patient only by what it returned (an empty one by another hospital, nobody).
        record.query = request.META.get("QUERY_STRING", "")[:2000]
        record.named_patient = _patient_in_query(resource_type, record.query)
    if BREAK_GLASS_HEADER in request.headers:
        # Flagged whether or not the emergency is allowed: a refused attempt is reported too.
        record.purpose_of_use = "ETREAT"
        record.break_glass_reason = request.headers[BREAK_GLASS_HEADER].strip()[:500] or "(no reason given)"
    return record


def record_written(record: AccessRecord, row: Resource) -> None:
    """After a write the stored version and its patient are known."""
    record.resource = f"{row.resource_type}/{row.logical_id}/_history/{row.version_id}"
    record.patient_id = row.patient_id


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


def _patient_in_query(resource_type: str | None, query: str) -> str | None:
    """The one patient a search names, if it names one by a valid id (anything else is not a patient)."""
    for name, value in parse_qsl(query):
        base = name.split(":")[0]
        if base not in PATIENT_SEARCH_PARAMS or "," in value:
            continue
        if base == "_id" and resource_type == "Patient":
            return value if ID_PATTERN.fullmatch(value) else None
        if base in ("patient", "subject") and (value.startswith("Patient/") or base == "patient"):
            value = value.removeprefix("Patient/")
            return value if ID_PATTERN.fullmatch(value) else None
    return None
