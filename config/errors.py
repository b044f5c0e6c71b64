"""Django's error handlers (400, 403, 404, 500): a fixed answer, never a page or a traceback.

Under ``/fhir`` and ``/dicomweb`` the answer is a FHIR ``OperationOutcome`` (what those
doors speak); anywhere else a JSON ``{"error": {"code", "message"}}``, the shape of ``/api/``.
The answers name no path, parameter or value of the request.
"""

from __future__ import annotations

import sys

from django.http import HttpRequest, HttpResponse, JsonResponse

from access import transient
from ehr.api.http import fhir_response
from ehr.fhir import issue, operation_outcome

FHIR_PREFIXES = ("/fhir", "/dicomweb")
# status: (FHIR issue type, JSON error code, message)
ANSWERS = {
    400: ("invalid", "bad_request", "The request could not be understood"),
    403: ("forbidden", "forbidden", "Access denied"),
    404: ("not-found", "not_found", "Nothing is served at this address"),
    500: ("exception", "server_error", "Internal error; the request was not applied"),
}


def error_answer(request: HttpRequest, status: int) -> HttpResponse:
    fhir_code, code, message = ANSWERS[status]
    if request.path.startswith(FHIR_PREFIXES):
        response = fhir_response(operation_outcome([issue("error", fhir_code, message)]), status)
    else:
        response = JsonResponse({"error": {"code": code, "message": message}}, status=status)
    response["Cache-Control"] = "no-store"
    return response


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_answer(request, 400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_answer(request, 403)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_answer(request, 404)


def server_error(request: HttpRequest) -> HttpResponse:
    """500, or 503 with Retry-After when what escaped was transient (``access.transient``).

    Reached by errors outside the doors' own wrappers (a middleware's session read, the OAuth
    token endpoint, ``/api/`` views without a wrapper); Django calls it while handling the
    error, so the error is ``sys.exc_info()``'s.
    """
    error = sys.exc_info()[1]
    fault = transient.fault_of(error) if error is not None else None
    if fault is None:
        return error_answer(request, 500)
    if request.path.startswith(FHIR_PREFIXES):
        response = fhir_response(operation_outcome([issue("error", "transient", fault.value)]), 503)
    else:
        response = JsonResponse({"error": {"code": "unavailable", "message": fault.value}}, status=503)
    response["Retry-After"] = transient.retry_after()
    response["Cache-Control"] = "no-store"
    return response
