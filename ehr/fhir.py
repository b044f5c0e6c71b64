"""FHIR rules that need no database: parsing, validation with fhir.resources, OperationOutcome.

Every problem with client input becomes one ``FhirError`` carrying the HTTP status and
the FHIR issue code; the API turns it into an ``OperationOutcome``. Validation uses
``fhir.resources.R4B`` (wire-compatible with R4 for the clinical resources; see
docs/fhir.md for the differences).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cache

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from access.errors import Refusal

from . import bindings, fhirjson

# The one definition of FHIR ids, resource type names and relative references (R4 id datatype:
# 1-64 of A-Z a-z 0-9 - .); routes, search, indexing, audit and imaging all use these.
ID = r"[A-Za-z0-9\-.]{1,64}"
TYPE = r"[A-Z][A-Za-z]{1,63}"  # a resource type name fits the 64-character index column
ID_PATTERN = re.compile(ID)
RELATIVE_REFERENCE = re.compile(rf"({TYPE})/({ID})(?:/_history/{ID})?")  # Type/id[/_history/vid]
MAX_ISSUES = 20
ISSUE_CODES = {"missing": "required", "extra_forbidden": "structure"}


class FhirError(Refusal):
    """A request the server refuses, with its HTTP status and FHIR issue type."""

    def __init__(self, status: int, code: str, diagnostics: str, *, issues: list[dict] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, code, diagnostics, headers=headers)
        self.diagnostics = diagnostics
        self.issues = issues

    @classmethod
    def of(cls, refusal: Refusal) -> FhirError:
        """A shared refusal as FHIR sees it (its code is a FHIR issue type already)."""
        if isinstance(refusal, cls):
            return refusal
        return cls(refusal.status, refusal.code, refusal.message, headers=refusal.headers)

    def outcome(self) -> dict:
        return operation_outcome(self.issues or [issue("error", self.code, self.diagnostics)])


def issue(severity: str, code: str, diagnostics: str, expression: str | None = None) -> dict:
    entry = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        entry["expression"] = [expression]
    return entry


def operation_outcome(issues: list[dict]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": issues}


@cache
def model_class(resource_type: str):
    """The fhir.resources model of a resource type, or None when the type does not exist."""
    if not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", resource_type):
        return None
    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None
    return model if issubclass(model, Resource) else None


def require_resource_type(resource_type: str) -> None:
    if model_class(resource_type) is None:
        raise FhirError(404, "not-found", f"Unknown resource type '{resource_type}'")


def parse_resource(text: str, *, expected_type: str | None = None) -> dict:
    """Parse and validate one resource; the dict keeps decimals exact (``Decimal``)."""
    try:
        resource = fhirjson.loads(text)
    except fhirjson.FhirJsonError as error:
        raise json_error(error) from None
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or model_class(resource_type) is None:
        raise FhirError(400, "structure", f"Unknown or missing resourceType: {resource_type!r}")
    if expected_type and resource_type != expected_type:
        raise FhirError(400, "invalid",
                        f"resourceType '{resource_type}' does not match the URL's '{expected_type}'")
    if "\\u0000" in text:
        refuse_nul(resource)
    validate(resource)
    return resource


def json_error(error: fhirjson.FhirJsonError, where: str = "") -> FhirError:
    """The answer to unreadable JSON: 400, or 413 ``too-costly`` when it is beyond the size bounds."""
    if isinstance(error, fhirjson.FhirJsonLimitError):
        return FhirError(413 if error.too_large else 400, "too-costly", f"{where}{error}")
    return FhirError(400, "structure", f"{where}{error}")


def refuse_nul(resource: dict) -> None:
    """PostgreSQL text cannot hold NUL (U+0000): refused, naming the element (never its value).

    Walked with a stack, not recursion; the JSON reader has already bounded the depth.
    """
    stack: list[tuple[str, object]] = [("", resource)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str) and "\x00" in node:
            message = f"{path[:200]}: NUL (U+0000) is not allowed in FHIR strings"
            raise FhirError(400, "invalid", message, issues=[issue("error", "invalid", message, path[:200])])
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, item in items:
            if isinstance(key, str) and "\x00" in key:
                raise FhirError(400, "invalid", f"{path[:200] or 'the resource'}: NUL (U+0000) in a member name")
            stack.append((f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}".lstrip("."), item))


def validate(resource: dict) -> None:
    """Validate against the R4B model and R4's required bindings (``ehr.bindings``); a failure
    lists every problem (up to MAX_ISSUES of the model's) with its FHIRPath-ish location."""
    issues = []
    try:
        model_class(resource["resourceType"]).model_validate(resource)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_input=False)
        issues = [
            issue("error", ISSUE_CODES.get(p["type"], "value"), f"{_location(p['loc'])}: {p['msg']}",
                  _location(p["loc"]))
            for p in problems[:MAX_ISSUES]
        ]
    except (TypeError, ValueError) as error:
        raise FhirError(422, "processing", f"{resource['resourceType']} is invalid: {error}") from None
    issues += bindings.check(resource)
    if issues:
        raise FhirError(422, "processing", f"{resource['resourceType']} is invalid", issues=issues) from None


def check_id(logical_id: str) -> None:
    if not ID_PATTERN.fullmatch(logical_id):
        raise FhirError(400, "invalid", f"'{logical_id[:80]}' is not a valid FHIR id")


def _location(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path.lstrip(".")


# Written only by the server (the audit log, ``ledger``): no client write creates, changes or
# deletes one, at any door (single requests, Bundles, conditional writes).
SERVER_WRITTEN_TYPES = frozenset({"AuditEvent"})


def refuse_server_written(resource_type: str) -> None:
    if resource_type in SERVER_WRITTEN_TYPES:
        raise FhirError(405, "not-supported", f"{resource_type} is written by the server only")


# Ids the server gives its own resources (the DICOMweb Endpoint of each organization): no
# client may claim one, or it could point that organization's ImagingStudies at its own URL.
SERVER_OWNED_IDS = {"Endpoint": re.compile(r"dicomweb(-[A-Za-z0-9\-.]*)?")}


def server_owned(resource_type: str, logical_id: str | None) -> bool:
    pattern = SERVER_OWNED_IDS.get(resource_type)
    return bool(pattern and logical_id and pattern.fullmatch(logical_id))


def patient_not_writable(resource_type: str, patient_id: str) -> FhirError:
    """The one answer for a record written into a compartment the writer may not write to,
    whether the patient does not exist or is another hospital's (no existence oracle)."""
    return FhirError(422, "processing", f"{resource_type} is in the compartment of Patient/{patient_id}, "
                                        "which is not a patient this account may write for")


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC with a Z, as written in meta.lastUpdated and Bundle envelopes."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
