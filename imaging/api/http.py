"""The HTTP side of DICOMweb: the DICOMweb door of the shared audited endpoint.

``/dicomweb/`` goes through ``access.endpoint`` as ``/fhir/`` does: the same OAuth2 bearer
tokens and access rules, every request (allowed or refused) audited in the request's
transaction, the view on a savepoint so a refused or failed request keeps none of its
writes, and errors answered as ``{"errorMessage": …, "status": …}`` JSON with the right
4xx; never HTML, never a traceback.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from access import endpoint
from access.audit import AccessRecord
from access.errors import Refusal

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"


class DicomwebError(Refusal):
    """A request refused with an HTTP status and a message safe to show the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, "error", message, headers=headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> HttpResponse:
    response = JsonResponse({"errorMessage": message, "status": status}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def allow(request: HttpRequest, *methods: str) -> None:
    if request.method not in methods:
        raise DicomwebError(405, f"{request.method} is not allowed here", {"Allow": ", ".join(methods)})


class DicomwebDoor(endpoint.Door):
    """``/dicomweb``: refusals as DICOMweb status JSON; a refused upload is read to its end."""

    name = "DICOMweb"

    def render(self, refusal: Refusal) -> HttpResponse:
        return error_response(refusal.status, refusal.message, refusal.headers)

    def unavailable(self, fault) -> Refusal:
        return Refusal(503, "transient", fault.value)  # Retry-After is set on every 503

    def finish(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.status_code >= 400:
            _drain(request)
        return response


DICOMWEB_DOOR = DicomwebDoor(logger)


def dicomweb_endpoint(**interactions: str):
    """Wrap a DICOMweb view in the audited endpoint: bearer token, errors as JSON, one audit entry.

    ``interactions`` maps each HTTP method (lower case) to the FHIR restful-interaction code
    its audit entry carries: create for STOW-RS, search-type for QIDO-RS, read for WADO-RS.
    """
    fallback = next(iter(interactions.values()))

    def record(request: HttpRequest, kwargs: dict) -> AccessRecord:
        method = "get" if request.method == "HEAD" else request.method.lower()
        access = AccessRecord(interaction=interactions.get(method, fallback))
        if access.interaction.startswith("search"):
            access.query = request.META.get("QUERY_STRING", "")[:2000]
        return access

    audited = endpoint.audited(DICOMWEB_DOOR, record=record)
    return lambda view: csrf_exempt(audited(view))


def _drain(request: HttpRequest) -> None:
    """Read what is left of a refused upload, so the client receives the answer, not a reset."""
    try:
        while request.read(1 << 16):
            pass
    except Exception:  # noqa: BLE001 - the answer goes out anyway
        pass
