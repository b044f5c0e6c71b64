"""The consent proof of one token, with its state on chain read now (or why it could not be).

Who may read which token's proof is ``ledger.selectors.consent_tokens_readable``.
"""

from __future__ import annotations

from ledger.chain import ChainClient, LedgerError
from ledger.models import ConsentToken
from ledger.verify.consent_proofs import consent_proof_document

from .reconcile import STATUS_NAMES
from .sync import artifact


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
