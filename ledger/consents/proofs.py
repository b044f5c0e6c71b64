"""The consent proof of one token, with its state on chain read now (or why it could not be)."""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from ehr.models import Role
from ledger.chain import ChainClient, LedgerError
from ledger.consent_proofs import consent_proof_document
from ledger.models import ConsentToken

from .reconcile import STATUS_NAMES
from .sync import artifact


def consent_tokens_readable(ctx: Any) -> Q:
    """The tokens whose proof the caller (an ``AccessContext``) may read (docs/consent.md).

    The DPO all, a patient their own, a clinician or integration those of its organization's
    patients and those granted to its organization; nobody else any (administrators
    included: least privilege, as for the audit log). A proof names the patient's
    pseudonym, so it goes no wider than that.
    """
    if ctx.role == Role.DPO:
        return Q()
    if ctx.role == Role.PATIENT and ctx.patient_id:
        return Q(patient_id=ctx.patient_id)
    if ctx.role in (Role.CLINICIAN, Role.INTEGRATION) and ctx.organization_id:
        return Q(organization_id=ctx.organization_id) | Q(grantee=f"Organization/{ctx.organization_id}")
    return Q(pk__in=[])


def consent_token_get(*, token_id: str, within: Q | None = None) -> ConsentToken | None:
    """The token, if it exists and (given ``within``, the caller's readable tokens) is readable."""
    tokens = ConsentToken.objects.filter(token_id=token_id)
    return (tokens.filter(within) if within is not None else tokens).first()


def consent_proof(*, token: ConsentToken, client: ChainClient) -> dict:
    return consent_proof_document(token=token, on_chain=_on_chain(token, client))


def _on_chain(token: ConsentToken, client: ChainClient) -> dict:
    if token.token_id is None:
        return {"status": "not sent yet"}
    try:
        block = client.block_number()
        issuer, valid_from, valid_until, status = client.call(
            artifact(), token.contract, "tokenState", int(token.token_id, 16))
    except LedgerError as error:
        return {"unavailable": str(error)}
    return {"block_number": block, "status": STATUS_NAMES.get(status, str(status)), "issuer": issuer,
            "valid_from": valid_from, "valid_until": valid_until}
