"""The ledger's HTTP door: thin views over ``ledger.audit`` and ``ledger.proofs``.

Errors are a fixed JSON shape ``{"error": {"code", "message"}}``, never a traceback.
"""

from __future__ import annotations

import re

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ehr.models import AccessProfile, Role
from django.http import HttpResponse

from ledger import proof_binary
from ledger.audit import audit_entry_get
from ledger.chain import consent_client
from ledger.consents.proofs import consent_proof
from ledger.models import ConsentToken
from ledger.proofs import ProofUnavailable, audit_proof

from .serializers import (
    AuditProofSerializer,
    ConsentProofSerializer,
    ErrorSerializer,
    NotAnchoredSerializer,
)

TOKEN_ID = re.compile(r"^0x[0-9a-f]{64}$")


def error_response(http_status: int, code: str, message: str, **extra) -> Response:
    return Response({"error": {"code": code, "message": message}, **extra}, status=http_status)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's own errors (authentication, methods, throttling) in the fixed error shape."""
    if not isinstance(exc, exceptions.APIException):
        return None
    code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
    response = error_response(exc.status_code, str(code), str(exc.detail))
    if auth_header := getattr(exc, "auth_header", None):
        response["WWW-Authenticate"] = auth_header
    return response


def may_see_entry(user, entry) -> bool:
    """Who may read an audit entry itself (and so get the salt that links it to the chain)."""
    if user.is_staff or entry.agent == user.get_username():
        return True
    profile = AccessProfile.objects.filter(user=user).first()
    if profile is None:
        return False
    if profile.role == Role.DPO:
        return True
    return profile.role == Role.PATIENT and bool(profile.patient_id) and profile.patient_id == entry.patient_id


class LedgerAPIView(APIView):
    permission_classes = [IsAuthenticated]

    def get_exception_handler(self):
        return api_exception_handler


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
        description=("Entry hash, Merkle path, root and the anchor transaction. The salt and the "
                     "event text are included only for those allowed to see the entry (the data "
                     "protection officer, the patient it is about, the user who made the access, "
                     "staff). `Accept: application/vnd.carrack.audit-proof` gives the same "
                     "proof as compact bytes (docs/audit-ledger.md). Check offline with "
                     "`carrack-verify audit-proof FILE --rpc URL`."),
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH, description="audit entry id")],
        responses={200: AuditProofSerializer, 403: ErrorSerializer, 404: ErrorSerializer,
                   409: NotAnchoredSerializer},
    )
    def get(self, request: Request, id: str) -> Response:
        entry = audit_entry_get(entry_id=int(id)) if id.isascii() and id.isdigit() and len(id) < 19 else None
        if entry is None:
            return error_response(status.HTTP_404_NOT_FOUND, "not_found", "no such audit event")
        try:
            proof = audit_proof(entry=entry, include_salt=may_see_entry(request.user, entry))
        except ProofUnavailable as error:
            return error_response(status.HTTP_409_CONFLICT, "not_anchored", str(error), status=error.status)
        if request.accepted_media_type == proof_binary.MEDIA_TYPE:
            return HttpResponse(proof_binary.proof_encode(proof), content_type=proof_binary.MEDIA_TYPE)
        return Response(proof)

    def finalize_response(self, request, response, *args, **kwargs):
        """Errors are JSON even when the binary proof was asked for."""
        if isinstance(response, Response) and request.accepted_media_type == proof_binary.MEDIA_TYPE:
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)


def may_see_consent(user, token: ConsentToken) -> bool:
    """Staff, the DPO, the patient, and the hospitals on either side of the grant."""
    if user.is_staff:
        return True
    profile = AccessProfile.objects.filter(user=user).first()
    if profile is None:
        return False
    if profile.role == Role.DPO:
        return True
    if profile.role == Role.PATIENT:
        return bool(profile.patient_id) and profile.patient_id == token.patient_id
    if profile.role in (Role.CLINICIAN, Role.INTEGRATION) and profile.organization_id:
        return profile.organization_id == token.organization_id or \
            token.grantee == f"Organization/{profile.organization_id}"
    return False


class ConsentProofView(LedgerAPIView):
    @extend_schema(
        operation_id="ledger_consent_proof",
        summary="Proof of a consent token on chain",
        description=("The token id and the fields it commits to (patient pseudonym, grantee, "
                     "purpose, Consent version hash, period), the grant (and revoke) transaction "
                     "and block, and the token's state on chain now. Check offline with "
                     "`carrack-verify consent FILE --rpc URL [--block N]`."),
        parameters=[OpenApiParameter("id", str, OpenApiParameter.PATH, description="token id (0x + 64 hex)")],
        responses={200: ConsentProofSerializer, 403: ErrorSerializer, 404: ErrorSerializer,
                   409: ErrorSerializer},
    )
    def get(self, request: Request, id: str) -> Response:
        token_id = id.lower()
        token = ConsentToken.objects.filter(token_id=token_id).first() if TOKEN_ID.match(token_id) else None
        if token is None or not may_see_consent(request.user, token):
            # One answer for both: a token id alone must not reveal that a patient consented.
            return error_response(status.HTTP_404_NOT_FOUND, "not_found", "no such consent token")
        if token.grant_tx_hash is None:
            return error_response(status.HTTP_409_CONFLICT, "not_confirmed",
                                  "the grant is not confirmed on chain yet")
        return Response(consent_proof(token=token, client=consent_client()))
