"""The ledger's HTTP door: thin views over ``ledger.selectors`` and ``ledger.consents.proofs``.

The same rules as ``/fhir/`` (docs/access-control.md), through the audited endpoint every
door shares (``access.drf.AuditedAPIView``): the bearer token from the ``Authorization``
header only, the SMART scope of what is read (``AuditEvent.r`` for audit proofs,
``Consent.r`` for consent proofs), who reads what decided in one place each
(``ehr.rules.audit_entries_readable``, ``ledger.selectors.consent_tokens_readable``),
and one AuditEvent per request, proof downloads included, allowed or refused, in the
request's own transaction. A proof the caller may not read answers exactly as one that does
not exist. Errors are a fixed JSON shape ``{"error": {"code", "message"}}``, never a
traceback, and quote nothing the caller sent.
"""

from __future__ import annotations

import logging
import re

from django.db.models import Q
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from access.drf import ERRORS, ApiDoor, AuditedAPIView, ErrorSerializer, error_response
from access.errors import Refusal
from ehr.rules import AUDIT_LOG_REFUSED, audit_entries_readable
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

from .serializers import AuditProofSerializer, ConsentProofSerializer, NotAnchoredSerializer

logger = logging.getLogger(__name__)
TOKEN_ID = re.compile(r"0x[0-9a-f]{64}")
# ASCII digits, at most 18 (a bigint id has 19): anything else is no entry, never a 500.
ENTRY_ID = re.compile(r"[0-9]{1,18}")


class LedgerAPIView(AuditedAPIView):
    """``/api/ledger/``: the audited endpoint's API door, logged as the ledger's."""

    door = ApiDoor(logger, name="ledger")


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
            raise Refusal(403, "forbidden", AUDIT_LOG_REFUSED)
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
