"""The ledger's HTTP door: thin views over ``ledger.selectors`` and ``ledger.consents.proofs``.

The same rules as ``/fhir/`` (docs/access-control.md): the bearer token from the
``Authorization`` header only (``ehr.api.http.authenticate``; a token in the URL, which proxies
and servers log, is refused), the SMART scope of what is read (``AuditEvent.r`` for audit
proofs, ``Consent.r`` for consent proofs), who reads what decided in one place each
(``ehr.api.auditevents.audit_entries_readable``, ``ledger.selectors.consent_tokens_readable``),
and one AuditEvent per request, allowed or refused, in the request's own transaction. A proof
the caller may not read answers exactly as one that does not exist. Errors are a fixed JSON
shape ``{"error": {"code", "message"}}``, never a traceback, and quote nothing the caller sent.
"""

from __future__ import annotations

import logging
import re

from django.db import transaction
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ehr.access import policy
from ehr.api import transient
from ehr.api.audit import AccessRecord, write_audit
from ehr.api.auditevents import AUDIT_LOG_REFUSED, audit_entries_readable
from ehr.api.http import access_context, authenticate
from ehr.fhir import FhirError
from ledger.chain import consent_client
from ledger.consents.proofs import consent_proof
from ledger.selectors import (
    ProofUnavailable,
    audit_entry_get,
    audit_proof,
    consent_token_get,
    consent_tokens_readable,
)
from ledger.verify import proof_binary

from .serializers import (
    AuditProofSerializer,
    ConsentProofSerializer,
    ErrorSerializer,
    NotAnchoredSerializer,
)

logger = logging.getLogger(__name__)
TOKEN_ID = re.compile(r"0x[0-9a-f]{64}")
# ASCII digits, at most 18 (a bigint id has 19): anything else is no entry, never a 500.
ENTRY_ID = re.compile(r"[0-9]{1,18}")
# A refusal of the shared FHIR door functions (FhirError) → this door's error code.
ERROR_CODES = {400: "bad_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found"}
ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer,
          406: ErrorSerializer}


def error_response(http_status: int, code: str, message: str, **extra) -> Response:
    return Response({"error": {"code": code, "message": message}, **extra}, status=http_status)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's own errors, Django's 404 and the shared door's refusals, in the fixed error shape."""
    if isinstance(exc, FhirError):
        response = error_response(exc.status, ERROR_CODES.get(exc.status, "error"), exc.diagnostics)
        for name, value in exc.headers.items():
            response[name] = value
        return response
    if isinstance(exc, Http404):
        return error_response(status.HTTP_404_NOT_FOUND, "not_found", "not found")
    if not isinstance(exc, exceptions.APIException):
        return None
    code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
    response = error_response(exc.status_code, str(code), str(exc.detail))
    if auth_header := getattr(exc, "auth_header", None):
        response["WWW-Authenticate"] = auth_header
    return response


class BadQuery(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "bad_request"
    default_detail = "bad query parameter"


class ProofNegotiation(DefaultContentNegotiation):
    """``?format=`` must name one of the view's renderers: 400, where DRF would raise a bare
    404 (a 500 here before); an Accept header no renderer satisfies stays DRF's 406."""

    def select_renderer(self, request, renderers, format_suffix=None):
        wanted = format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE)
        formats = sorted(renderer.format for renderer in renderers)
        if wanted is not None and wanted not in formats:
            raise BadQuery(f"format must be one of: {', '.join(formats)}", "bad_format")
        return super().select_renderer(request, renderers, format_suffix)


class LedgerAPIView(APIView):
    """Authentication and scopes as on ``/fhir/``, one audit entry per request, JSON errors."""

    authentication_classes: list = []  # ehr.api.http.authenticate, in perform_authentication
    permission_classes: list = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = ProofNegotiation
    query_parameters = frozenset({"format"})

    @classmethod
    def as_view(cls, **initkwargs):
        """Outside ATOMIC_REQUESTS: ``dispatch`` opens the request's transaction itself."""
        return transaction.non_atomic_requests(super().as_view(**initkwargs))

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        """The answer and its audit entry commit together; an access that cannot be audited is refused.

        A transient fault (database, chain: ``ehr.api.transient``) answers 503 with Retry-After,
        after rerunning the transaction if it was a deadlock.
        """
        def attempt() -> HttpResponse:
            request.access = self.access = AccessRecord(interaction="read")
            request.__dict__.pop("access_context", None)
            with transaction.atomic():
                response = self._answer(request, *args, **kwargs)
                write_audit(request, self.access, response)
            return response

        try:
            return transient.run_retrying(attempt, logger=logger, what=f"{request.method} {request.path}")
        except Exception as error:  # noqa: BLE001 - an access that cannot be audited is refused
            fault = transient.fault_of(error)
            if fault is not None:
                return self._transient_answer(request, fault, error)
            _log_failure("audit entry could not be written", request, error)
            return _fixed_error(500, "not_audited", "the access could not be audited")

    def _transient_answer(self, request: HttpRequest, fault: transient.Fault, error: Exception) -> HttpResponse:
        """503 ``unavailable`` with Retry-After, logged once; audited on its own when the database is up."""
        response = _fixed_error(503, "unavailable", fault.value[0].lower() + fault.value[1:])
        transient.refusal_finish(response, logger=logger, what=f"ledger {request.method} {request.path}",
                                 fault=fault, error=error, audit=lambda: write_audit(request, self.access, response))
        return response

    def _answer(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        """The view on a savepoint: a failure keeps nothing it did and still answers JSON."""
        try:
            with transaction.atomic():
                return super().dispatch(request, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - the one place that must answer no matter what
            if transient.fault_of(error) is not None:
                raise  # the whole transaction goes: dispatch reruns it or answers 503
            _log_failure("ledger request failed", request, error)
            return _fixed_error(500, "internal", "internal error; nothing was done")

    def initial(self, request: Request, *args, **kwargs) -> None:
        """Query parameters first: a token in the URL is refused, never read."""
        unknown = set(request.query_params) - self.query_parameters
        if "access_token" in unknown:
            raise BadQuery("send the access token in the Authorization header, not in the URL",
                           "token_in_url")
        if unknown:
            raise BadQuery(f"unknown query parameter; this endpoint takes only: "
                           f"{', '.join(sorted(self.query_parameters))}", "unknown_parameter")
        super().initial(request, *args, **kwargs)

    def perform_authentication(self, request: Request) -> None:
        """The bearer token from the Authorization header only (or an admin session), as on /fhir/."""
        authenticate(request._request)
        request.user = request._request.user

    def get_exception_handler(self):
        return api_exception_handler

    def reader(self, request: Request, resource_type: str) -> policy.AccessContext:
        """The caller's access context; 403, whatever the id, without the scope to read ``resource_type``."""
        ctx = access_context(request._request)
        if not policy.scope_allows(ctx, resource_type, "read"):
            raise FhirError(403, "forbidden", f"The token's scopes do not allow read on {resource_type}")
        return ctx


def _fixed_error(http_status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=http_status)


def _log_failure(what: str, request: HttpRequest, error: Exception) -> None:
    """The error's type at ERROR; the traceback (whose messages may quote values) only at DEBUG."""
    logger.error("%s: %s %s (%s)", what, request.method, request.path, type(error).__name__)
    logger.debug("%s: traceback", what, exc_info=error)


class BinaryProofRenderer(BaseRenderer):
    """Lets content negotiation accept the binary proof's media type (the view encodes it)."""

    media_type = proof_binary.MEDIA_TYPE
    format = "bin"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return proof_binary.proof_encode(data)


class AuditEventProofView(LedgerAPIView):
    renderer_classes = [JSONRenderer, BinaryProofRenderer]

    @extend_schema(
        operation_id="ledger_audit_event_proof",
        summary="Proof that an audit event is anchored on chain",
        description=("The event, its salt, leaf hash, Merkle path, root and the anchor transaction, "
                     "for those who may read the entry (the data protection officer; the patient it "
                     "is about), with a token allowing `AuditEvent.r` in the Authorization header. "
                     "Anyone else gets 404, as for an unknown id. After erasure the event and salt "
                     "are gone and the proof has hashes only, all salted. "
                     "`Accept: application/vnd.carrack.audit-proof` gives the same "
                     "proof as compact bytes (docs/audit-ledger.md). Check offline with "
                     "`carrack-verify audit-proof FILE --rpc URL`. Every request is audited."),
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH, description="audit entry id")],
        responses={200: AuditProofSerializer, 409: NotAnchoredSerializer, **ERRORS},
    )
    def get(self, request: Request, id: str) -> Response:
        ctx = self.reader(request, "AuditEvent")
        readable = audit_entries_readable(ctx)
        if readable is None:
            raise FhirError(403, "forbidden", AUDIT_LOG_REFUSED)
        entry = audit_entry_get(entry_id=int(id)) if ENTRY_ID.fullmatch(id) else None
        if entry is not None:  # the audit entry of this request names what was asked for
            self.access.resource, self.access.patient_id = f"AuditEvent/{entry.pk}", entry.patient_id
        if entry is None or audit_entry_get(entry_id=entry.pk, within=readable) is None:
            # One answer for both: an id must not tell whose entries exist.
            return error_response(status.HTTP_404_NOT_FOUND, "not_found", "no such audit event")
        try:
            proof = audit_proof(entry=entry)
        except ProofUnavailable as error:
            return error_response(status.HTTP_409_CONFLICT, "not_anchored", str(error), status=error.status)
        if request.accepted_media_type == proof_binary.MEDIA_TYPE:
            return HttpResponse(proof_binary.proof_encode(proof), content_type=proof_binary.MEDIA_TYPE)
        return Response(proof)

    def finalize_response(self, request, response, *args, **kwargs):
        """Errors are JSON even when the binary proof was asked for (or negotiation failed)."""
        if isinstance(response, Response) and \
                getattr(request, "accepted_media_type", None) == proof_binary.MEDIA_TYPE:
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)


class ConsentProofView(LedgerAPIView):
    @extend_schema(
        operation_id="ledger_consent_proof",
        summary="Proof of a consent token on chain",
        description=("The token id and the fields it commits to (patient pseudonym, grantee, "
                     "purpose, Consent version hash, period), the grant (and revoke) transaction "
                     "and block, and the token's state on chain now. For the data protection "
                     "officer, the patient, and the hospitals on either side of the grant, with a "
                     "token allowing `Consent.r` in the Authorization header; anyone else gets 404, "
                     "as for an unknown id. Check offline with "
                     "`carrack-verify consent FILE --rpc URL [--block N]`. Every request is audited."),
        parameters=[OpenApiParameter("id", str, OpenApiParameter.PATH, description="token id (0x + 64 hex)")],
        responses={200: ConsentProofSerializer, 409: ErrorSerializer, **ERRORS},
    )
    def get(self, request: Request, id: str) -> Response:
        ctx = self.reader(request, "Consent")
        token_id = id.lower()
        token = consent_token_get(token_id=token_id) if TOKEN_ID.fullmatch(token_id) else None
        if token is not None:  # the audit entry of this request names the Consent and its patient
            self.access.resource = f"Consent/{token.consent_id}/_history/{token.consent_version}"
            self.access.patient_id = token.patient_id
        if token is None or consent_token_get(token_id=token_id, within=_readable_tokens(ctx)) is None:
            # One answer for both: a token id alone must not reveal that a patient consented.
            return error_response(status.HTTP_404_NOT_FOUND, "not_found", "no such consent token")
        if token.grant_tx_hash is None:
            return error_response(status.HTTP_409_CONFLICT, "not_confirmed",
                                  "the grant is not confirmed on chain yet")
        return Response(consent_proof(token=token, client=consent_client()))


def _readable_tokens(ctx) -> Q:
    return consent_tokens_readable(role=ctx.role, organization_id=ctx.organization_id,
                                   patient_id=ctx.patient_id)
