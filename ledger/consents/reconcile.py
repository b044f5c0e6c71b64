"""Mirror against chain: every divergence between the PostgreSQL mirror and the contract.

The chain is the source of truth. A mirror row whose fields no longer hash to its token id,
whose status or period differs from the token's on chain, or a token this node granted on
chain that the mirror does not know, is reported (never silently repaired: a divergence
means a bug or tampering, and a person decides).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from ledger.chain import ChainClient
from ledger.models import ConsentChainTx, ConsentToken
from ledger.verify import consent_format as fmt

from .sync import artifact, registry_address

STATUS_NAMES = {0: "none", fmt.ACTIVE: "active", fmt.REVOKED: "revoked"}


@dataclass(frozen=True)
class Divergence:
    token: str
    problem: str

    def __str__(self) -> str:
        return f"token {self.token}: {self.problem}"


def consent_reconcile(*, client: ChainClient) -> list[Divergence]:
    """All divergences between the mirror and the chain (an empty list when they agree)."""
    contract, build = registry_address(client), artifact()
    divergences = []
    known = set()
    for token in ConsentToken.objects.exclude(token_id=None).order_by("pk").iterator():
        known.add(int(token.token_id, 16))
        problem = _fields_problem(token) or _state_problem(token, client.call(
            build, token.contract, "tokenState", int(token.token_id, 16)))
        if problem:
            divergences.append(Divergence(token.token_id, problem))
    for event in client.events(build, contract, "Granted", issuer=client.address):
        if event["args"]["tokenId"] not in known:
            divergences.append(Divergence("0x" + event["args"]["tokenId"].to_bytes(32, "big").hex(),
                                          f"granted on chain in {event['transaction']}, unknown to the mirror"))
    return divergences


def _fields_problem(token: ConsentToken) -> str | None:
    pseudonym = fmt.pseudonym(settings.CONSENT_PSEUDONYM_KEY.encode(), token.patient_id)
    terms = fmt.terms(pseudonym=pseudonym, grantee=fmt.grantee_hash(token.grantee),
                      purpose=fmt.purpose_bytes(token.purpose), consent_hash=bytes(token.consent_hash),
                      serial=token.serial)
    expected = fmt.token_id(chain_id=token.chain_id, contract=token.contract, issuer=token.issuer,
                            terms=terms, valid_from=fmt.unix(token.valid_from),
                            valid_until=fmt.unix(token.valid_until))
    if expected != token.token_id or terms != bytes(token.terms) or pseudonym != bytes(token.pseudonym):
        return "the mirror's patient, grantee, purpose, consent, serial or period do not hash to the token id"
    return None


def _state_problem(token: ConsentToken, state: tuple) -> str | None:
    issuer, valid_from, valid_until, status = state
    on_chain = STATUS_NAMES.get(status, str(status))
    if status != 0 and (issuer.lower() != token.issuer.lower() or valid_from != fmt.unix(token.valid_from)
                        or valid_until != fmt.unix(token.valid_until)):
        return "issuer or period differ from the chain"
    expected = _expected_on_chain(token)
    if on_chain not in expected:
        return f"mirror says {token.status}, chain says {on_chain} (expected {' or '.join(sorted(expected))})"
    return None


def _expected_on_chain(token: ConsentToken) -> set[str]:
    """What the chain may show for this mirror row, given the transactions still in flight."""
    grant_mined = _mined(token, ConsentChainTx.GRANT)
    if token.status == ConsentToken.ACTIVE:
        return {"active"}
    if token.status == ConsentToken.PENDING:
        return {"active"} if grant_mined else {"none", "active"}
    if _mined(token, ConsentChainTx.REVOKE):
        return {"revoked"}
    return {"active", "revoked"} if grant_mined else {"none", "active", "revoked"}


def _mined(token: ConsentToken, action: str) -> bool:
    return ConsentChainTx.objects.filter(token=token, action=action, status="mined").exists()
