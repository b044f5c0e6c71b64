"""What a FHIR request's audit entry says: its restful interaction, resource, query and patient.

The entry itself is written by the shared endpoint (``access.endpoint``, ``access.audit``)
in the request's transaction; this module knows FHIR's side of it: which interaction a view
kind and HTTP method are, which patient a search names, what a write stored.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from django.http import HttpRequest

from access.audit import AccessRecord
from access.policy import BREAK_GLASS_HEADER
from ehr.fhir import ID_PATTERN
from ehr.models import Resource

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
    ("validate", "POST"): "operation",
    ("auditevent-search", "GET"): "search-type",
    ("auditevent", "GET"): "read",
}
PATIENT_SEARCH_PARAMS = ("patient", "subject", "_id")


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
