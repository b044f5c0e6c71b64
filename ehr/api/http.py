"""The HTTP side of FHIR: media types, Prefer, headers, and errors as OperationOutcome.

Every answer from ``/fhir/`` goes through the FHIR door of the shared audited endpoint
(``FhirDoor``, ``access.endpoint``), so no client ever sees HTML, a DRF ``{"detail": ...}``
or a traceback.
"""

from __future__ import annotations

import functools
import logging
import re

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from access import endpoint, policy
from access.errors import Refusal
from ehr import bindings, fhirjson
from ehr.fhir import FhirError, issue, operation_outcome
from ehr.models import Resource, ResourceVersion

from .audit import access_record, record_written

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
JSON_TYPES = ("application/fhir+json", "application/json", "application/json-patch+json")


def fhir_response(body: str | dict | None, status: int = 200, *, headers: dict | None = None,
                  fhir_version: str | None = None) -> HttpResponse:
    text = fhirjson.dumps(body) if isinstance(body, dict) else (body or "")
    content_type = f"{FHIR_JSON}; charset=utf-8"
    if fhir_version:
        content_type += f"; fhirVersion={fhir_version}"
    response = HttpResponse(text, status=status, content_type=content_type)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def bundle_response(text: str) -> HttpResponse:
    """A Bundle the server assembled (searchset, history, batch answer): 413 past FHIR_MAX_RESPONSE_BYTES.

    Raised inside the view's transaction, so a refused answer also keeps none of its writes.
    """
    limit = settings.FHIR_MAX_RESPONSE_BYTES
    # Encoded only when it could matter: UTF-8 takes at most 4 bytes a character.
    if len(text) > limit or (len(text) * 4 > limit and len(text.encode("utf-8")) > limit):
        raise FhirError(413, "too-costly", f"The answer would exceed {limit} bytes; ask for less "
                                           "(a smaller _count, fewer Bundle entries)")
    return fhir_response(text)


def outcome_response(error: FhirError) -> HttpResponse:
    return fhir_response(error.outcome(), error.status, headers=error.headers)


def resource_headers(row: Resource | ResourceVersion, base_url: str) -> dict[str, str]:
    return {
        "ETag": f'W/"{row.version_id}"',
        "Last-Modified": row.last_updated.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "Location": f"{base_url}/{row.resource_type}/{row.logical_id}/_history/{row.version_id}",
    }


def negotiate(request: HttpRequest) -> None:
    """Refuse XML (406 for answers, 415 for bodies) and any body that is not JSON."""
    wanted = (request.GET.get("_format") or request.headers.get("Accept", "")).lower()
    if "xml" in wanted and "json" not in wanted:
        raise FhirError(406, "not-supported", "Only JSON is supported (application/fhir+json)")
    if request.method in ("POST", "PUT", "PATCH") and request.body:
        content_type = request.content_type.lower()
        if content_type == "application/x-www-form-urlencoded" and request.path.endswith("/_search"):
            return
        if content_type not in JSON_TYPES:
            raise FhirError(415, "not-supported",
                            f"Unsupported Content-Type '{content_type}'; send application/fhir+json")


def requested_fhir_version(request: HttpRequest) -> str | None:
    match = re.search(r"fhirVersion\s*=\s*([0-9.]+)", request.headers.get("Accept", ""))
    return match.group(1) if match else None


def prefer(request: HttpRequest, name: str) -> str | None:
    for part in request.headers.get("Prefer", "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key.strip() == name:
                return value.strip().strip('"')
    return None


def written_response(request: HttpRequest, row: Resource, status: int, base_url: str) -> HttpResponse:
    """A create or update answer, shaped by ``Prefer: return=…``."""
    record_written(request.access, row)
    headers = resource_headers(row, base_url)
    wanted = prefer(request, "return") or "representation"
    if wanted == "minimal":
        return fhir_response(None, status, headers=headers)
    if wanted == "OperationOutcome":
        message = f"{row.resource_type}/{row.logical_id} stored as version {row.version_id}"
        return fhir_response(operation_outcome([issue("information", "informational", message)]), status,
                             headers=headers)
    return fhir_response(row.text, status, headers=headers)


def base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/fhir").rstrip("/")


def access_context(request: HttpRequest) -> policy.AccessContext:
    """``access.endpoint.access_context``, refusing as FHIR does (inside a Bundle too)."""
    try:
        return endpoint.access_context(request)
    except Refusal as refusal:
        raise FhirError.of(refusal) from None


# SMART clients read the CapabilityStatement before they have a token (it holds the OAuth URLs).
PUBLIC_KINDS = {"metadata"}


class FhirDoor(endpoint.Door):
    """``/fhir``: refusals as OperationOutcomes, XML and foreign bodies refused up front."""

    name = "FHIR"

    def render(self, refusal: Refusal) -> HttpResponse:
        return outcome_response(FhirError.of(refusal))

    def prepare(self, request: HttpRequest) -> None:
        negotiate(request)


FHIR_DOOR = FhirDoor(logger)


def fhir_endpoint(kind: str):
    """Wrap a FHIR view in the audited endpoint (``access.endpoint``): one audit entry per
    request, errors as OperationOutcomes, the view on a savepoint of the request's transaction.

    ``kind`` (``metadata``, ``type``, ``instance``, ...) and the HTTP method give the entry's
    restful interaction (``ehr.api.audit``).
    """
    authentication = (endpoint.Authentication.IF_SENT if kind in PUBLIC_KINDS
                      else endpoint.Authentication.REQUIRED)
    audited = endpoint.audited(FHIR_DOOR, record=lambda request, kwargs: access_record(request, kind, kwargs),
                               authentication=authentication)

    def decorate(view):
        @functools.wraps(view)
        def handling(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            # Prefer: handling=strict also makes the required bindings strict (ehr.bindings).
            with bindings.strict_handling(prefer(request, "handling") == "strict"):
                return view(request, *args, **kwargs)

        return audited(handling)

    return decorate

