"""The HTTP side of FHIR: media types, Prefer, headers, and errors as OperationOutcome.

Every answer from ``/fhir/`` goes through here, so no client ever sees HTML, a DRF
``{"detail": ...}`` or a traceback.
"""

from __future__ import annotations

import functools
import logging
import re

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse

from ehr import fhirjson
from ehr.access import policy
from ehr.access.oauth import access_token_lookup
from ehr.access.scopes import parse_scopes
from ehr.fhir import FhirError, issue, operation_outcome
from ehr.models import Resource, ResourceVersion

from . import transient
from .audit import access_record, record_written, write_audit

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


def authenticate(request: HttpRequest) -> None:
    """An OAuth2 bearer token (SMART scopes) or an admin session (role rules only) is required.

    Sets ``request.user``, ``request.smart_scopes`` (None for a session) and
    ``request.oauth_client_id``; a client-credentials token acts as its application's owner.
    """
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        if request.user.is_authenticated and request.user.is_staff:
            request.smart_scopes, request.oauth_client_id = None, None
            return
        raise FhirError(401, "login", "Authentication required (Authorization: Bearer <token>)",
                        headers={"WWW-Authenticate": 'Bearer realm="fhir"'})
    token = access_token_lookup(value.strip())
    user = token and (token.user or (token.application.user if token.application else None))
    if token is None or user is None or not user.is_active:
        raise FhirError(401, "login", "The access token is invalid, expired or revoked",
                        headers={"WWW-Authenticate": 'Bearer realm="fhir", error="invalid_token"'})
    request.user = user
    request.smart_scopes = parse_scopes(token.scope)
    request.oauth_client_id = token.application.client_id if token.application else None


def access_context(request: HttpRequest) -> policy.AccessContext:
    """The caller's access context, built once per request; a declared emergency is written
    into the audit record."""
    ctx = getattr(request, "access_context", None)
    if ctx is None:
        ctx = request.access_context = policy.AccessContext.from_request(request)
        if ctx.break_glass:
            request.access.purpose_of_use = "ETREAT"
            request.access.break_glass_reason = ctx.break_glass_reason
    return ctx


# SMART clients read the CapabilityStatement before they have a token (it holds the OAuth URLs).
PUBLIC_KINDS = {"metadata"}


def fhir_endpoint(kind: str):
    """Wrap a FHIR view: errors become OperationOutcomes and every request is audited.

    The view runs on a savepoint, so a refused or failed request keeps none of its writes
    while its audit entry is still written in the request's transaction. A transient fault
    (``ehr.api.transient``) takes the whole transaction, audit entry included: a deadlock
    runs it again, so a request keeps exactly one audit set however many attempts it took;
    an outage, or a deadlock past the retries, answers 503 ``transient`` with Retry-After.
    """

    def decorate(view):
        @transaction.non_atomic_requests  # this wrapper's own transaction is the request's
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            def attempt() -> HttpResponse:
                return _attempt(view, request, kind, args, kwargs)

            try:
                return transient.run_retrying(attempt, logger=logger, what=_request_line(request))
            except Exception as error:  # noqa: BLE001 - an access that cannot be audited is refused
                fault = transient.fault_of(error)
                if fault is not None:
                    return _transient_answer(request, fault, error)
                _log_failure("audit entry could not be written", request, error)
                return outcome_response(FhirError(500, "exception", "The access could not be audited"))

        return wrapped

    return decorate


def _attempt(view, request: HttpRequest, kind: str, args, kwargs) -> HttpResponse:
    """One run of the request and its audit entry in one transaction; a rerun starts afresh.

    The body stays readable (``request.body`` is kept), and what an earlier attempt noted
    about the access (its writes, the access context) is dropped with its rollback.
    """
    request.access = access_record(request, kind, kwargs)
    request.__dict__.pop("access_context", None)
    with transaction.atomic():
        response = _answer(view, request, args, kwargs, public=kind in PUBLIC_KINDS)
        write_audit(request, request.access, response)
    return response


def transient_error(fault: transient.Fault) -> FhirError:
    """503 ``transient`` with Retry-After: nothing was applied, the same request may be sent again."""
    return FhirError(503, "transient", fault.value, headers={"Retry-After": transient.retry_after()})


def _transient_answer(request: HttpRequest, fault: transient.Fault, error: Exception) -> HttpResponse:
    """The 503, logged once; audited in a transaction of its own when the database is up."""
    response = outcome_response(transient_error(fault))
    transient.refusal_finish(response, logger=logger, what=f"FHIR {_request_line(request)}", fault=fault,
                             error=error, audit=lambda: write_audit(request, request.access, response))
    return response


def _request_line(request: HttpRequest) -> str:
    return f"{request.method} {request.path}"


def _answer(view, request: HttpRequest, args, kwargs, *, public: bool) -> HttpResponse:
    try:
        negotiate(request)
        if not public or "Authorization" in request.headers:
            authenticate(request)
        with transaction.atomic():
            return view(request, *args, **kwargs)
    except FhirError as error:
        return outcome_response(error)
    except RequestDataTooBig:
        return outcome_response(FhirError(413, "too-costly", "The request body is too large"))
    except Exception as error:  # noqa: BLE001 - the one place that must answer no matter what
        if transient.fault_of(error) is not None:
            raise  # the whole transaction goes: fhir_endpoint reruns it or answers 503
        _log_failure("FHIR request failed", request, error)
        return outcome_response(FhirError(500, "exception", "Internal error; the request was not applied"))


def _log_failure(what: str, request: HttpRequest, error: Exception) -> None:
    """The error's type at ERROR; the traceback (whose messages may quote values) only at DEBUG."""
    logger.error("%s: %s %s (%s)", what, request.method, request.path, type(error).__name__)
    logger.debug("%s: traceback", what, exc_info=error)
