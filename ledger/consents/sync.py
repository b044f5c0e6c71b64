"""Consent tokens to and from the chain: send the outbox, then listen for confirmed events.

The sign/persist/send/resend skeleton is the shared outbox (``ledger.chain.outbox``); this
module is its consent ``Purpose`` (grant and revoke calls, a mined or taken nonce) and the
listener that turns confirmed events into the mirror.

One beat task calls ``consent_sync``; it is single-flight (advisory locks of the task and of
its signing key, try-only) and each step commits on its own, so a crash or an unreachable
node loses nothing:

    queued --sign, persist bytes--> sent --broadcast--> sent --mined--> mined
    sent, never broadcast (a crash in between)    --> the same bytes, at the next tick
    sent, not mined after RESEND_SECONDS         --> the same bytes again (re-signed with higher
                                                      fees when the base fee rose above the offer)
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
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ledger.chain import Artifact, ChainClient, ContractRejected, LedgerUnavailable, load_artifact, outbox
from ledger.chain.outbox import Call, ForeignSigner
from ledger.models import ChainCursor, ConsentChainTx, ConsentToken
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
    with outbox.signer_flight(SYNC_LOCK, client.address) as acquired:
        if not acquired:
            report.busy = True
            return report
        try:
            contract = registry_address(client)
            purpose = ConsentPurpose(client, contract, report)
            _recheck(client, contract, report)
            _send_queued(client, purpose, now or timezone.now())
            _follow_sent(client, purpose, now or timezone.now())
            _listen(client, contract, report)
        except LedgerUnavailable as error:
            report.unavailable = str(error)
            logger.warning("consent sync paused: %s", error)
        except ForeignSigner as error:
            report.failed.append(str(error))
            logger.error("consent sync stopped: %s", error)
    return report


def registry_address(client: ChainClient) -> str:
    return outbox.contract_address(CONTRACT, client.chain_id())


def artifact() -> Artifact:
    return load_artifact(CONTRACT, settings.CONTRACTS_BUILD_DIR)


class ConsentPurpose:
    """Consent's hooks into the outbox, for one tick: they record into its report."""

    replace_after: int | None = None  # resent as is; re-signed only when the base fee outgrew it

    def __init__(self, client: ChainClient, contract: str, report: SyncReport) -> None:
        self.client, self.contract, self.report = client, contract, report
        self.resend_seconds = settings.CONSENT_RESEND_SECONDS
        self.build = artifact()

    def call(self, tx: ConsentChainTx) -> Call:
        """A grant names its token (the id hashes chain, contract and issuer in), a revoke the id."""
        token = tx.token
        if tx.action == ConsentChainTx.GRANT:
            valid_from, valid_until = fmt.unix(token.valid_from), fmt.unix(token.valid_until)
            token.chain_id, token.contract, token.issuer = tx.chain_id, tx.contract, self.client.address
            token.token_id = fmt.token_id(chain_id=tx.chain_id, contract=tx.contract, issuer=self.client.address,
                                          terms=bytes(token.terms), valid_from=valid_from, valid_until=valid_until)
            return Call(self.build, tx.contract, "grant", (bytes(token.terms), valid_from, valid_until),
                        gas=GRANT_GAS)
        return Call(self.build, tx.contract, "revoke", (int(token.token_id, 16),), gas=REVOKE_GAS)

    def mined(self, client: ChainClient, tx: ConsentChainTx, receipt: dict, now: datetime) -> bool:
        _mined(tx, receipt, self.report)
        return True

    def nonce_taken(self, client: ChainClient, tx: ConsentChainTx, now: datetime) -> bool:
        _nonce_taken(client, self.contract, tx, self.report)
        return True

    def sent(self, tx: ConsentChainTx, *, again: bool) -> None:
        if again:
            self.report.resent += 1
        else:
            self.report.sent += 1

    def replaced(self, tx: ConsentChainTx, old_hash: str) -> None:
        logger.info("consent %s transaction %s replaced by %s (higher fees)", tx.action, old_hash, tx.tx_hash)


# --- sending ----------------------------------------------------------------------------------

def _send_queued(client: ChainClient, purpose: ConsentPurpose, now: datetime) -> None:
    queued = list(ConsentChainTx.objects.filter(status="queued").select_related("token").order_by("id")[:BATCH])
    if not queued:
        return
    chain_id = client.chain_id()
    outbox.require_code(client, CONTRACT, purpose.contract, chain_id)
    nonce = outbox.next_nonce(client, ConsentChainTx, chain_id)
    fees = client.fee_suggestion()
    for tx in queued:
        tx.chain_id, tx.contract = chain_id, purpose.contract
        outbox.sign_and_persist(client, purpose, tx, nonce=nonce, fees=fees, also=lambda tx=tx: _save_token(tx))
        outbox.send(client, purpose, tx, now)
        nonce += 1


def _save_token(tx: ConsentChainTx) -> None:
    """A grant's token learns its id with the signing, in the same transaction."""
    if tx.action == ConsentChainTx.GRANT:
        tx.token.save(update_fields=["token_id", "chain_id", "contract", "issuer"])


def _follow_sent(client: ChainClient, purpose: ConsentPurpose, now: datetime) -> None:
    sent = list(ConsentChainTx.objects.filter(status="sent").select_related("token").order_by("nonce"))
    if not sent:
        return
    mined_nonce = client.nonce(sent[0].signer, pending=False)
    for tx in sent:
        outbox.follow(client, purpose, tx, now, mined_nonce=mined_nonce)


def _mined(tx: ConsentChainTx, receipt: dict, report: SyncReport) -> None:
    tx.status, tx.block_number = ("mined" if receipt["status"] == 1 else "failed"), receipt["block_number"]
    tx.block_hash = receipt["block_hash"]
    tx.save(update_fields=["status", "block_number", "block_hash"])
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
    outbox.unsign(tx, "queued")
    report.requeued += 1


# --- reorganizations -------------------------------------------------------------------------

def _recheck(client: ChainClient, contract: str, report: SyncReport) -> None:
    """Find the newest mined transactions the chain no longer holds and send them again."""
    mined = (ConsentChainTx.objects.filter(status="mined", signer=client.address, contract=contract,
                                           block_number__isnull=False)  # no block: settled by effect
             .select_related("token").order_by("-id")[:settings.CONSENT_RECHECK_TRANSACTIONS])
    lost = []
    for tx in mined:
        where, receipt = outbox.recheck(client, tx)
        if where == outbox.LOST:
            lost.append(tx)
        elif where == outbox.MOVED:
            _moved(tx, receipt)
    rewind_to = min([client.block_number(), *(tx.block_number - 1 for tx in lost)])
    with transaction.atomic():
        if lost:
            _requeue_lost(client, lost, report)
        _rewind_cursor(client, rewind_to)


def _moved(tx: ConsentChainTx, receipt: dict) -> None:
    """Same transaction, another block (a reorg mined it again): follow it, nothing else changes."""
    with transaction.atomic():
        tx.block_number, tx.block_hash = receipt["block_number"], receipt["block_hash"]
        tx.save(update_fields=["block_number", "block_hash"])
        field = "grant_block" if tx.action == ConsentChainTx.GRANT else "revoke_block"
        ConsentToken.objects.filter(pk=tx.token_id).update(**{field: receipt["block_number"]})


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
        outbox.unsign(tx, "queued")
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
    return outbox.deploy_block(CONTRACT, chain_id)
