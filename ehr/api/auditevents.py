"""``AuditEvent`` through FHIR: the audit log itself (``ledger.AuditEntry``), not the Resource table.

A patient reads the entries about their own record (who accessed it); the data
protection officer reads all of them. Reading the log is itself an audited access.
"""

from __future__ import annotations

from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from access import policy
from access.models import Role
from ehr import envelope, fhirjson
from ehr.fhir import FhirError
from ehr.rules import AUDIT_LOG_REFUSED, audit_entries_readable
from ledger.models import AuditEntry

from . import params
from .http import access_context, base_url, fhir_endpoint, fhir_response

DEFAULT_COUNT = 50
MAX_COUNT = 500
SEARCH_PARAMS = ("patient", "_count", "_offset", "_total", "_format")


@csrf_exempt
@fhir_endpoint("auditevent-search")
def search(request: HttpRequest, resource_type: str = "AuditEvent") -> HttpResponse:
    params.allow(request, "GET")
    ctx = access_context(request)
    _check_scope(ctx, "search")
    asked = params.query_params(request)
    unknown = sorted({name for name, _ in asked if name not in SEARCH_PARAMS})
    if unknown:
        raise FhirError(400, "not-supported", f"AuditEvent supports patient, _count and _offset, not {unknown[0]}")
    patient = _patient_param(asked)
    entries = AuditEntry.objects.filter(_entries_visible(ctx, patient))
    if patient is not None:
        entries = entries.filter(patient_id=patient)
        request.access.patient_id = patient  # allowed to read that patient's log: it is about them
    offset, count = params.paging(request, default=DEFAULT_COUNT)
    count = min(count, MAX_COUNT)
    page = list(entries.order_by("-id")[offset:offset + count])
    total = entries.count()
    base = base_url(request)
    links = envelope.paging_links(f"{base}/AuditEvent", asked, offset=offset, count=count,
                                  has_next=offset + count < total)
    items = [envelope.entry(f"{base}/AuditEvent/{entry.pk}", _event_text(entry)) for entry in page]
    return fhir_response(envelope.bundle("searchset", items, total=total, links=links))


@csrf_exempt
@fhir_endpoint("auditevent")
def read(request: HttpRequest, resource_type: str, logical_id: str) -> HttpResponse:
    params.allow(request, "GET")
    ctx = access_context(request)
    _check_scope(ctx, "read")
    entry = (AuditEntry.objects.filter(pk=int(logical_id)).first()
             if logical_id.isascii() and logical_id.isdigit() and len(logical_id) < 19 else None)
    if entry is None:
        raise FhirError(404, "not-found", f"AuditEvent/{logical_id} is not known")
    readable = _entries_visible(ctx, None)  # refuses roles without audit access
    if not AuditEntry.objects.filter(readable, pk=entry.pk).exists():
        raise FhirError(403, "forbidden", f"AuditEvent/{logical_id} is outside this account's access")
    return fhir_response(_event_text(entry))


def _check_scope(ctx: policy.AccessContext, interaction: str) -> None:
    if not policy.scope_allows(ctx, "AuditEvent", interaction):
        raise FhirError(403, "forbidden", f"The token's scopes do not allow {interaction} on AuditEvent")


def _entries_visible(ctx: policy.AccessContext, patient: str | None):
    """``audit_entries_readable`` as a FHIR refusal; a patient asking for another patient is refused."""
    readable = audit_entries_readable(ctx)
    if readable is None:
        raise FhirError(403, "forbidden", AUDIT_LOG_REFUSED)
    if ctx.role == Role.PATIENT and patient not in (None, ctx.patient_id):
        raise FhirError(403, "forbidden", "A patient may read only the audit events of their own record")
    return readable


def _patient_param(params: list[tuple[str, str]]) -> str | None:
    values = [value for name, value in params if name == "patient"]
    if len(values) > 1 or any("," in value or not value for value in values):
        raise FhirError(400, "invalid", "patient takes one patient id")
    return values[0].removeprefix("Patient/") if values else None


def _event_text(entry: AuditEntry) -> str:
    """The stored event with the entry id as its logical id."""
    event = fhirjson.loads(entry.event)
    return fhirjson.dumps({"resourceType": "AuditEvent", "id": str(entry.pk),
                           **{k: v for k, v in event.items() if k not in ("resourceType", "id")}})
