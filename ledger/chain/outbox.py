"""One persisted signed-transaction outbox for every contract this node writes to.

Each use (audit anchors, consent grants and revokes; model versions and export manifests
next) is a ``Purpose``: how to build its call, what to do once its transaction is mined, and
what to do when its nonce went to another transaction. Its rows are a model inheriting
``ChainTransaction``. The skeleton they share lives here, once:

    sign, persist (committed) --> SIGNED --send--> SENT --receipt--> purpose.mined
    SENT, no receipt, its nonce used on chain      --> purpose.nonce_taken
    SENT, not mined after resend_seconds           --> the same bytes again (attempts + 1)
      ... and after replace_after broadcasts, or at the first timeout when the base fee has
      risen above the offer                        --> re-signed at the same nonce with fees
                                                       raised >= 12.5 %, persisted, sent
    mined, then gone from its block (``recheck``)  --> the purpose decides (lost or moved)

The signed bytes are committed before they are sent, so a crash or an unreachable node
between signing and sending loses nothing: the next tick sends the same bytes (same hash).
A purpose's tick is single-flight per purpose and per signing key (``signer_flight``), so
two workers never hand out the same nonce.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models, transaction
from django.db.models import Max
from django.utils import timezone

from ledger.deployments import read_deployments
from ledger.locks import single_flight

from . import Artifact, ChainClient, LedgerError, LedgerUnavailable


class ChainTransaction(models.Model):
    """The persisted signed transaction: who signs, at which nonce, the bytes, fees, progress.

    Nullable here because a row may be decided before it is signed (a queued consent); a
    model whose rows are signed when created narrows its fields to NOT NULL. Each model keeps
    its own status names: ``SIGNED`` (persisted, not yet broadcast), ``SENT``, and
    ``IN_FLIGHT`` (the statuses whose nonces the node may not show yet).
    """

    SIGNED, SENT = "pending", "sent"
    IN_FLIGHT: tuple[str, ...] = ("pending", "sent")

    status = models.CharField(max_length=12)
    chain_id = models.BigIntegerField(null=True)
    contract = models.CharField(max_length=42, null=True)
    signer = models.CharField(max_length=42, null=True)
    nonce = models.BigIntegerField(null=True)
    raw_tx = models.BinaryField(null=True)
    tx_hash = models.CharField(max_length=66, null=True)
    max_fee_per_gas = models.DecimalField(max_digits=40, decimal_places=0, null=True)
    max_priority_fee_per_gas = models.DecimalField(max_digits=40, decimal_places=0, null=True)
    created = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True)
    attempts = models.PositiveIntegerField(default=0)  # broadcasts of the current bytes
    block_number = models.BigIntegerField(null=True)
    block_hash = models.CharField(max_length=66, null=True)
    # Hashes of earlier signings (same nonce, lower fees) that a replacement superseded:
    # an old signing may still be the one that gets mined.
    replaced_tx_hashes = ArrayField(models.CharField(max_length=66), default=list, blank=True)

    class Meta:
        abstract = True


Tx = TypeVar("Tx", bound=ChainTransaction)


@dataclass(frozen=True)
class Call:
    """A contract call to sign: what a purpose builds from its row."""

    artifact: Artifact
    contract: str
    function: str
    args: tuple[Any, ...]
    gas: int | None = None  # None: estimated when signed (a call that would revert is refused)


class Purpose(Protocol):
    """One use of the outbox. ``mined`` and ``nonce_taken`` return whether the tick progressed."""

    resend_seconds: float
    replace_after: int | None  # broadcasts before a re-signing; None: only when underpriced

    def call(self, tx: Any) -> Call: ...
    def mined(self, client: ChainClient, tx: Any, receipt: dict, now: datetime) -> bool: ...
    def nonce_taken(self, client: ChainClient, tx: Any, now: datetime) -> bool: ...
    def sent(self, tx: Any, *, again: bool) -> None: ...
    def replaced(self, tx: Any, old_hash: str) -> None: ...


class ForeignSigner(LedgerError):
    """The transaction was signed by another key: only that key can replace it."""

    def __init__(self, tx: ChainTransaction) -> None:
        super().__init__(f"{tx} is signed by {tx.signer}, not this key")
        self.tx = tx


# --- single flight and nonces ---------------------------------------------------------------

@contextmanager
def signer_flight(purpose_lock: int, signer: str) -> Iterator[bool]:
    """Try the purpose's lock, then the signing key's; yields whether this caller holds both.

    The key's lock keeps two purposes that share a key from handing out the same nonce.
    """
    with single_flight(purpose_lock) as purpose_free:
        if not purpose_free:
            yield False
            return
        with single_flight(signer_lock(signer)) as signer_free:
            yield signer_free


def signer_lock(signer: str) -> int:
    """The advisory lock key (a signed bigint) of one signing address."""
    digest = hashlib.sha256(b"carrack-signer:" + signer.lower().encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def next_nonce(client: ChainClient, model: type[ChainTransaction], chain_id: int) -> int:
    """The node's pending count, never below the nonce + 1 of a row of this key in flight.

    Only rows in flight count (a node may not show them yet): a mined one's nonce is in the
    node's count, and one a reorganization dropped is not on chain any more, so the nonce
    comes from the chain again, with no gap that nothing would ever fill.
    """
    last = (model.objects.filter(signer=client.address, chain_id=chain_id, status__in=model.IN_FLIGHT,
                                 nonce__isnull=False).aggregate(last=Max("nonce"))["last"])
    pending = client.nonce(client.address, pending=True)
    return pending if last is None else max(pending, last + 1)


# --- sign, persist, send --------------------------------------------------------------------

def sign_and_persist(client: ChainClient, purpose: Purpose, tx: Tx, *, nonce: int,
                     fees: tuple[int, int], also: Callable[[], Any] | None = None) -> Tx:
    """Sign the purpose's call and commit the bytes (with ``also``'s rows) before any send.

    A signing that supersedes one (``replace``) keeps the old hash in ``replaced_tx_hashes``.
    """
    call = purpose.call(tx)
    max_fee, priority = max(fees[0], fees[1]), fees[1]
    signed = client.signed_call(call.artifact, call.contract, call.function, *call.args, nonce=nonce,
                                max_fee_per_gas=max_fee, max_priority_fee_per_gas=priority, gas=call.gas)
    if tx.raw_tx is not None and tx.tx_hash and tx.tx_hash != signed.tx_hash:
        tx.replaced_tx_hashes = [*tx.replaced_tx_hashes, tx.tx_hash]
    tx.signer, tx.nonce, tx.raw_tx, tx.tx_hash = client.address, nonce, signed.raw, signed.tx_hash
    tx.max_fee_per_gas, tx.max_priority_fee_per_gas = max_fee, priority
    tx.status, tx.attempts, tx.sent_at = tx.SIGNED, 0, None
    with transaction.atomic():
        tx.save()
        if also is not None:
            also()
    return tx


def send(client: ChainClient, purpose: Purpose, tx: ChainTransaction, now: datetime, *,
         again: bool = False) -> bool:
    """Broadcast the persisted bytes; only then record the send."""
    client.send_raw(bytes(tx.raw_tx))
    tx.status, tx.sent_at, tx.attempts = tx.SENT, now, tx.attempts + 1
    tx.save(update_fields=["status", "sent_at", "attempts"])
    purpose.sent(tx, again=again)
    return True


def follow(client: ChainClient, purpose: Purpose, tx: ChainTransaction, now: datetime, *,
           mined_nonce: int | None = None) -> bool:
    """One step of a sent transaction toward its receipt; True when the tick progressed.

    ``mined_nonce`` is the signer's mined count when the caller already asked the node.
    """
    receipt = client.receipt(tx.tx_hash)
    if receipt is not None:
        return purpose.mined(client, tx, receipt, now)
    if mined_nonce is None:
        mined_nonce = client.nonce(tx.signer, pending=False)
    if mined_nonce > tx.nonce:
        return purpose.nonce_taken(client, tx, now)
    if tx.sent_at is not None and now - tx.sent_at < timedelta(seconds=purpose.resend_seconds):
        return False
    if _replacement_due(client, purpose, tx):
        return replace(client, purpose, tx, now)
    send(client, purpose, tx, now, again=True)
    return False


def _replacement_due(client: ChainClient, purpose: Purpose, tx: ChainTransaction) -> bool:
    """Enough broadcasts of these bytes, or a base fee above what they offer (never mined)."""
    if purpose.replace_after is not None and tx.attempts >= purpose.replace_after:
        return True
    return tx.max_fee_per_gas is not None and client.base_fee() > int(tx.max_fee_per_gas)


def replace(client: ChainClient, purpose: Purpose, tx: Tx, now: datetime, *,
            nonce: int | None = None) -> bool:
    """Re-sign the call with fees raised >= 12.5 %, persist, send.

    Its own nonce (so exactly one of the two signings can be mined) unless ``nonce`` is
    given: a fresh one when its nonce went to an unrelated transaction, the chain's when
    its nonce lies beyond the chain's count after a reorganization.
    """
    if client.address != tx.signer:
        raise ForeignSigner(tx)
    max_fee, priority = client.fee_suggestion()
    fees = (max(max_fee, bumped(int(tx.max_fee_per_gas or 0))),
            max(priority, bumped(int(tx.max_priority_fee_per_gas or 0))))
    old_hash = tx.tx_hash
    sign_and_persist(client, purpose, tx, nonce=tx.nonce if nonce is None else nonce, fees=fees)
    purpose.replaced(tx, old_hash)
    return send(client, purpose, tx, now)


def bumped(fee: int) -> int:
    """At least 12.5 % more (nodes require 10 % to accept a replacement)."""
    return fee + -(-fee // 8) + 1


def unsign(tx: ChainTransaction, status: str) -> None:
    """Back to deciding: the bytes, nonce and block are forgotten; signed again later.

    For models whose rows may wait unsigned (a queue); one signed at creation re-signs instead.
    """
    tx.status, tx.raw_tx, tx.tx_hash, tx.nonce, tx.sent_at = status, None, None, None, None
    tx.block_number = tx.block_hash = None
    tx.max_fee_per_gas = tx.max_priority_fee_per_gas = None
    tx.save()


# --- after mining ---------------------------------------------------------------------------

KEPT, MOVED, LOST = "kept", "moved", "lost"


def recheck(client: ChainClient, tx: ChainTransaction) -> tuple[str, dict | None]:
    """Where a mined transaction stands now: KEPT, MOVED (another block) or LOST, and its receipt.

    The block hash tells a re-mined block at the same height; rows mined before it was
    stored compare the block number.
    """
    receipt = client.receipt(tx.tx_hash)
    if receipt is None:
        return LOST, None
    if receipt["block_number"] != tx.block_number or (tx.block_hash and receipt["block_hash"] != tx.block_hash):
        return MOVED, receipt
    return KEPT, receipt


def depth(client: ChainClient, mined: dict) -> int:
    """Confirmations of a receipt or event: 1 in the latest block."""
    return client.block_number() - mined["block_number"] + 1


# --- the contract ---------------------------------------------------------------------------

def deployment(name: str, chain_id: int) -> dict | None:
    """The contract's entry in the deployments file (read directly: ``ledger.models`` imports
    this module, so it cannot go through ``ledger.selectors``)."""
    return read_deployments(settings.CHAIN_DEPLOYMENTS_FILE, chain_id).get(name)


def contract_address(name: str, chain_id: int) -> str:
    entry = deployment(name, chain_id)
    if entry is None:
        raise LedgerUnavailable(f"{name} is not deployed on chain {chain_id} (manage.py chain_deploy)")
    return entry["address"]


def deploy_block(name: str, chain_id: int, address: str | None = None) -> int:
    """The contract's deployment block (0 when unknown, or when ``address`` is another one)."""
    entry = deployment(name, chain_id)
    if entry is None or (address is not None and entry["address"] != address):
        return 0
    return entry.get("block", 0)


def require_code(client: ChainClient, name: str, address: str, chain_id: int) -> None:
    """A call to an empty address "succeeds" without a log and burns the nonce: refuse it."""
    if not client.has_code(address):
        raise LedgerUnavailable(f"{name} at {address} has no code on chain {chain_id} "
                                "(chain reset? run manage.py chain_deploy)")
