"""The HTTP side of DICOMweb: authentication, one audit entry per request, DICOM-style errors.

The counterpart of ``ehr.api.http.fhir_endpoint`` for ``/dicomweb/``: the same OAuth2
bearer tokens and access rules, every request (allowed or refused) audited in its own
transaction, and errors answered as ``{"errorMessage": …, "status": …}`` JSON with the
right 4xx; never HTML, never a traceback.
"""

from __future__ import annotations

import functools
import logging

from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from ehr.api import transient
from ehr.api.audit import AccessRecord, write_audit
from ehr.api.http import authenticate
from ehr.fhir import FhirError

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"


class DicomwebError(Exception):
    """A request refused with an HTTP status and a message safe to show the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> HttpResponse:
    response = JsonResponse({"errorMessage": message, "status": status}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def allow(request: HttpRequest, *methods: str) -> None:
    if request.method not in methods:
        raise DicomwebError(405, f"{request.method} is not allowed here", {"Allow": ", ".join(methods)})


def dicomweb_endpoint(**interactions: str):
    """Wrap a DICOMweb view: bearer token, errors as JSON, one audit entry per request.

    ``interactions`` maps each HTTP method (lower case) to the FHIR restful-interaction code
    its audit entry carries: create for STOW-RS, search-type for QIDO-RS, read for WADO-RS.
    The view and its audit entry share one transaction; a request that fails is rolled back
    whole and its audit entry written in a transaction of its own (no savepoint round trips
    on the way that succeeds). A transient fault (``ehr.api.transient``) takes the whole
    transaction: a deadlock runs it again, an outage answers 503 with Retry-After.
    """
    fallback = next(iter(interactions.values()))

    def decorate(view):
        @csrf_exempt
        @transaction.non_atomic_requests  # this wrapper's own transaction is the request's
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            method = "get" if request.method == "HEAD" else request.method.lower()
            interaction = interactions.get(method, fallback)

            def attempt() -> HttpResponse:
                return _attempt(view, request, interaction, args, kwargs)

            try:
                response = transient.run_retrying(attempt, logger=logger, what=f"DICOMweb {_line(request)}")
            except Exception as error:  # noqa: BLE001 - an access that cannot be audited is refused
                fault = transient.fault_of(error)
                if fault is not None:
                    response = _transient_answer(request, fault, error)
                else:
                    _log_failure("audit entry could not be written", request, error)
                    response = error_response(500, "The access could not be audited")
            if response.status_code >= 400:
                _drain(request)
            return response

        return wrapped

    return decorate


def _attempt(view, request: HttpRequest, interaction: str, args, kwargs) -> HttpResponse:
    """One run of the view and its audit entry; a rerun (after a deadlock) starts afresh."""
    request.access = AccessRecord(interaction=interaction)
    request.__dict__.pop("access_context", None)
    if interaction.startswith("search"):
        request.access.query = request.META.get("QUERY_STRING", "")[:2000]
    try:
        with transaction.atomic():
            response = _answer(view, request, args, kwargs)
            write_audit(request, request.access, response)
    except _Failed as failed:  # rolled back: nothing the view wrote is kept
        response = failed.response
        with transaction.atomic():
            write_audit(request, request.access, response)
    return response


def _transient_answer(request: HttpRequest, fault: transient.Fault, error: Exception) -> HttpResponse:
    """503 with Retry-After, logged once; audited on its own when the database is up."""
    response = error_response(503, fault.value)
    transient.refusal_finish(response, logger=logger, what=f"DICOMweb {_line(request)}", fault=fault,
                             error=error, audit=lambda: write_audit(request, request.access, response))
    return response


def _line(request: HttpRequest) -> str:
    return f"{request.method} {request.path}"


class _Failed(Exception):
    """A view that failed: its transaction is rolled back, the error answer still audited."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def _answer(view, request: HttpRequest, args, kwargs) -> HttpResponse:
    try:
        authenticate(request)
        return view(request, *args, **kwargs)
    except FhirError as error:
        raise _Failed(error_response(error.status, error.diagnostics, error.headers)) from None
    except DicomwebError as error:
        raise _Failed(error_response(error.status, error.message, error.headers)) from None
    except RequestDataTooBig:
        raise _Failed(error_response(413, "The request body is too large")) from None
    except Exception as error:  # noqa: BLE001 - the one place that must answer no matter what
        if transient.fault_of(error) is not None:
            raise  # the whole transaction goes: dicomweb_endpoint reruns it or answers 503
        _log_failure("DICOMweb request failed", request, error)
        raise _Failed(error_response(500, "Internal error; the request was not applied")) from None


def _drain(request: HttpRequest) -> None:
    """Read what is left of a refused upload, so the client receives the answer, not a reset."""
    try:
        while request.read(1 << 16):
            pass
    except Exception:  # noqa: BLE001 - the answer goes out anyway
        pass


def _log_failure(what: str, request: HttpRequest, error: Exception) -> None:
    """The error's type at ERROR; the traceback (whose messages may quote values) only at DEBUG."""
    logger.error("%s: %s %s (%s)", what, request.method, request.path, type(error).__name__)
    logger.debug("%s: traceback", what, exc_info=error)
