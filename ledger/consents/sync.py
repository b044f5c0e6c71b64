"""Consent tokens to and from the chain: send the outbox, then listen for confirmed events.

One beat task calls ``consent_sync``; it is single-flight (an advisory lock, try-only) and
each step commits on its own, so a crash or an unreachable node loses nothing:

    queued --sign, persist bytes--> sent --mined--> mined
    sent, not mined after RESEND_SECONDS         --> the same bytes again
    sent, its nonce used by something else        --> queued again (re-signed, fresh nonce),
                                                      unless the chain already shows its effect

The listener reads ``Granted`` and ``Revoked`` events of this node's key up to the block
that has CONSENT_CONFIRMATIONS confirmations and updates the mirror: only then does a
pending grant become active. Revocations never wait for it (see ``tokens``).

A chain may drop blocks it had mined (a reorganization, a node restored from an older state),
so each tick first re-checks the CONSENT_RECHECK_TRANSACTIONS newest mined transactions:

    mined, its receipt gone    --> queued (re-signed at the chain's nonce, with every later one
                                   of this key still in flight, so no nonce gap is left behind)
    mined, in another block    --> mined, block number updated

Fail closed: a lost grant's token goes back to pending (refused) until its grant is confirmed
again; a lost revoke's token stays revoked in the mirror (refused) while the revoke is resent.
The listener's cursor moves back to before the lost block (and never past the chain's head),
so the events of the transactions mined again are read again (applying them is idempotent).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ledger.chain import Artifact, ChainClient, ContractRejected, LedgerUnavailable, load_artifact
from ledger.locks import single_flight
from ledger.models import ChainCursor, ConsentChainTx, ConsentToken
from ledger.selectors import deployed_contracts
from ledger.verify import consent_format as fmt

logger = logging.getLogger(__name__)

CONTRACT = "ConsentRegistry"
SYNC_LOCK = 0x434152434F4E5359  # "CARCONSY"
BATCH = 500  # transactions signed per tick
GRANT_GAS, REVOKE_GAS = 90_000, 60_000  # fixed: a revoke is signed before its grant is mined
LISTENER = "consent"


@dataclass
class SyncReport:
    busy: bool = False
    sent: int = 0
    resent: int = 0
    requeued: int = 0
    mined: int = 0
    lost: int = 0
    confirmed: int = 0
    revoked: int = 0
    failed: list[str] = field(default_factory=list)
    unavailable: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def consent_sync(*, client: ChainClient, now: datetime | None = None) -> SyncReport:
    """Send what is queued, follow what is sent, and apply confirmed events to the mirror."""
    report = SyncReport()
    with single_flight(SYNC_LOCK) as acquired:
        if not acquired:
            report.busy = True
            return report
        try:
            contract = registry_address(client)
            _recheck(client, contract, report)
            _send_queued(client, contract, now or timezone.now(), report)
            _follow_sent(client, contract, now or timezone.now(), report)
            _listen(client, contract, report)
        except LedgerUnavailable as error:
            report.unavailable = str(error)
            logger.warning("consent sync paused: %s", error)
    return report


def registry_address(client: ChainClient) -> str:
    chain_id = client.chain_id()
    entry = deployed_contracts(registry=settings.CHAIN_DEPLOYMENTS_FILE, chain_id=chain_id).get(CONTRACT)
    if entry is None:
        raise LedgerUnavailable(f"{CONTRACT} is not deployed on chain {chain_id} (manage.py chain_deploy)")
    return entry["address"]


def artifact() -> Artifact:
    return load_artifact(CONTRACT, settings.CONTRACTS_BUILD_DIR)


# --- sending ----------------------------------------------------------------------------------

def _send_queued(client: ChainClient, contract: str, now: datetime, report: SyncReport) -> None:
    queued = list(ConsentChainTx.objects.filter(status="queued").select_related("token").order_by("id")[:BATCH])
    if not queued:
        return
    if not client.has_code(contract):
        raise LedgerUnavailable(f"{CONTRACT} at {contract} has no code (chain reset? manage.py chain_deploy)")
    chain_id, build = client.chain_id(), artifact()
    nonce = _next_nonce(client, chain_id)
    max_fee, priority = client.fee_suggestion()
    for tx in queued:
        signed = _sign(client, build, contract, chain_id, tx, nonce=nonce, fees=(max_fee, priority))
        with transaction.atomic():
            tx.chain_id, tx.contract, tx.signer, tx.nonce = chain_id, contract, client.address, nonce
            tx.raw_tx, tx.tx_hash, tx.status = signed.raw, signed.tx_hash, "sent"
            tx.sent_at, tx.attempts = now, 0  # persisted first: a failed send is resent later
            tx.save()
            if tx.action == ConsentChainTx.GRANT:
                tx.token.save(update_fields=["token_id", "chain_id", "contract", "issuer"])
        client.send_raw(signed.raw)
        tx.attempts = 1
        tx.save(update_fields=["attempts"])
        nonce += 1
        report.sent += 1


def _sign(client: ChainClient, build: Artifact, contract: str, chain_id: int, tx: ConsentChainTx, *,
          nonce: int, fees: tuple[int, int]):
    token = tx.token
    options = {"nonce": nonce, "max_fee_per_gas": fees[0], "max_priority_fee_per_gas": fees[1]}
    if tx.action == ConsentChainTx.GRANT:
        valid_from, valid_until = fmt.unix(token.valid_from), fmt.unix(token.valid_until)
        token.chain_id, token.contract, token.issuer = chain_id, contract, client.address
        token.token_id = fmt.token_id(chain_id=chain_id, contract=contract, issuer=client.address,
                                      terms=bytes(token.terms), valid_from=valid_from, valid_until=valid_until)
        return client.signed_call(build, contract, "grant", bytes(token.terms), valid_from, valid_until,
                                  gas=GRANT_GAS, **options)
    return client.signed_call(build, contract, "revoke", int(token.token_id, 16), gas=REVOKE_GAS, **options)


def _next_nonce(client: ChainClient, chain_id: int) -> int:
    """The node's pending count, never below the nonce + 1 of a transaction of this key in flight.

    Mined ones are in the node's count; one the chain lost is not, and counting it would
    leave a nonce gap after a reorganization (resynced from the chain instead).
    """
    last = (ConsentChainTx.objects.filter(signer=client.address, chain_id=chain_id, nonce__isnull=False,
                                          status="sent").order_by("-nonce").values_list("nonce", flat=True).first())
    pending = client.nonce(client.address, pending=True)
    return pending if last is None else max(pending, last + 1)


def _follow_sent(client: ChainClient, contract: str, now: datetime, report: SyncReport) -> None:
    sent = list(ConsentChainTx.objects.filter(status="sent").select_related("token").order_by("nonce"))
    if not sent:
        return
    mined_nonce = client.nonce(sent[0].signer, pending=False)
    for tx in sent:
        receipt = client.receipt(tx.tx_hash)
        if receipt is not None:
            _mined(tx, receipt, report)
        elif tx.nonce < mined_nonce:
            _nonce_taken(client, contract, tx, report)
        elif now - tx.sent_at >= timedelta(seconds=settings.CONSENT_RESEND_SECONDS):
            client.send_raw(bytes(tx.raw_tx))
            tx.sent_at, tx.attempts = now, tx.attempts + 1
            tx.save(update_fields=["sent_at", "attempts"])
            report.resent += 1


def _mined(tx: ConsentChainTx, receipt: dict, report: SyncReport) -> None:
    tx.status, tx.block_number = ("mined" if receipt["status"] == 1 else "failed"), receipt["block_number"]
    tx.save(update_fields=["status", "block_number"])
    if tx.status == "failed":
        report.failed.append(f"{tx.action} of token {tx.token.token_id} reverted in {tx.tx_hash}")
        logger.error("consent %s transaction %s reverted (see consent_reconcile)", tx.action, tx.tx_hash)
    else:
        report.mined += 1


def _nonce_taken(client: ChainClient, contract: str, tx: ConsentChainTx, report: SyncReport) -> None:
    """The nonce went to another transaction: done if the chain shows the effect, else re-sign."""
    try:
        status = client.call(artifact(), contract, "tokenState", int(tx.token.token_id, 16))[3]
    except ContractRejected:
        status = 0
    wanted = fmt.ACTIVE if tx.action == ConsentChainTx.GRANT else fmt.REVOKED
    if status == wanted or (tx.action == ConsentChainTx.GRANT and status == fmt.REVOKED):
        tx.status = "mined"
        tx.save(update_fields=["status"])
        report.mined += 1
        return
    tx.status, tx.raw_tx, tx.tx_hash, tx.nonce, tx.sent_at = "queued", None, None, None, None
    tx.save()
    report.requeued += 1


# --- reorganizations -------------------------------------------------------------------------

def _recheck(client: ChainClient, contract: str, report: SyncReport) -> None:
    """Find the newest mined transactions the chain no longer holds and send them again."""
    mined = (ConsentChainTx.objects.filter(status="mined", signer=client.address, contract=contract,
                                           block_number__isnull=False)  # no block: settled by effect
             .select_related("token").order_by("-id")[:settings.CONSENT_RECHECK_TRANSACTIONS])
    lost = []
    for tx in mined:
        receipt = client.receipt(tx.tx_hash)
        if receipt is None:
            lost.append(tx)
        elif receipt["block_number"] != tx.block_number:
            _moved(tx, receipt["block_number"])
    rewind_to = min([client.block_number(), *(tx.block_number - 1 for tx in lost)])
    with transaction.atomic():
        if lost:
            _requeue_lost(client, lost, report)
        _rewind_cursor(client, rewind_to)


def _moved(tx: ConsentChainTx, block: int) -> None:
    """Same transaction, another block (a reorg mined it again): follow it, nothing else changes."""
    with transaction.atomic():
        tx.block_number = block
        tx.save(update_fields=["block_number"])
        field = "grant_block" if tx.action == ConsentChainTx.GRANT else "revoke_block"
        ConsentToken.objects.filter(pk=tx.token_id).update(**{field: block})


def _requeue_lost(client: ChainClient, lost: list[ConsentChainTx], report: SyncReport) -> None:
    """Back to the outbox: the lost ones, and every later one still in flight (their nonces
    would wait behind the lost ones forever). A lost grant no longer counts."""
    later = ConsentChainTx.objects.filter(status="sent", signer=client.address,
                                          nonce__gt=min(tx.nonce for tx in lost))
    for tx in [*lost, *later.select_related("token")]:
        if tx.action == ConsentChainTx.GRANT:
            ConsentToken.objects.filter(pk=tx.token_id, status=ConsentToken.ACTIVE).update(
                status=ConsentToken.PENDING, confirmed_at=None)
            ConsentToken.objects.filter(pk=tx.token_id).update(grant_tx_hash=None, grant_block=None)
        else:
            ConsentToken.objects.filter(pk=tx.token_id).update(revoke_tx_hash=None, revoke_block=None)
        tx.status, tx.raw_tx, tx.tx_hash, tx.nonce, tx.sent_at, tx.block_number = (
            "queued", None, None, None, None, None)
        tx.save()
        logger.warning("consent %s of token %s is no longer on chain; sending it again", tx.action,
                       tx.token.token_id)
    report.lost += len(lost)


def _rewind_cursor(client: ChainClient, block: int) -> None:
    """Never past ``block``: events above it are re-read once the chain mines them (again)."""
    ChainCursor.objects.filter(name=LISTENER, block__gt=block).update(block=block)


# --- listening --------------------------------------------------------------------------------

def _listen(client: ChainClient, contract: str, report: SyncReport) -> None:
    chain_id = client.chain_id()
    cursor = ChainCursor.objects.filter(name=LISTENER).first()
    if cursor is None or cursor.chain_id != chain_id or cursor.contract != contract:
        cursor = ChainCursor(name=LISTENER, chain_id=chain_id, contract=contract, block=_deploy_block(chain_id) - 1)
    safe = client.block_number() - settings.CONSENT_CONFIRMATIONS + 1
    if safe <= cursor.block:
        return
    build, now = artifact(), timezone.now()
    granted = client.events(build, contract, "Granted", from_block=cursor.block + 1, to_block=safe,
                            issuer=client.address)
    revoked = client.events(build, contract, "Revoked", from_block=cursor.block + 1, to_block=safe,
                            issuer=client.address)
    with transaction.atomic():
        for event in granted:
            token_id = _hex_id(event["args"]["tokenId"])
            ConsentToken.objects.filter(token_id=token_id).update(
                grant_tx_hash=event["transaction"], grant_block=event["block_number"])
            report.confirmed += ConsentToken.objects.filter(
                token_id=token_id, status=ConsentToken.PENDING).update(status=ConsentToken.ACTIVE, confirmed_at=now)
        for event in revoked:
            report.revoked += ConsentToken.objects.filter(token_id=_hex_id(event["args"]["tokenId"])).update(
                revoke_tx_hash=event["transaction"], revoke_block=event["block_number"])
        cursor.block = safe
        cursor.save()


def _hex_id(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


def _deploy_block(chain_id: int) -> int:
    entry = deployed_contracts(registry=settings.CHAIN_DEPLOYMENTS_FILE, chain_id=chain_id).get(CONTRACT)
    return entry.get("block", 0) if entry else 0
