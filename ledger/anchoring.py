"""Anchoring the audit log on chain: one signed transaction per contiguous seq range.

The beat task calls ``anchor_tick`` every few seconds. A tick is single-flight (a
PostgreSQL advisory lock, try-only: a second caller returns at once) and drives at most
one open batch through its life, each step in its own short transaction:

    no open batch --build, sign, persist--> pending --send--> sent --N confirmations--> confirmed
    sent, not mined after RESEND_SECONDS            --> send the same bytes again (attempts + 1)
    sent, not mined after REPLACE_AFTER broadcasts  --> re-sign with the same nonce and fees
                                                        raised >= 12.5 %, persist, send
    confirmed, the chain no longer holds it         --> lost --same bytes, or re-signed at the
                                                        chain's nonce--> sent --> confirmed
    confirmed, its transaction in another block     --> sent (followed and confirmed again)

The signed bytes are committed before they are sent, so a crash or an unreachable node at
any point loses nothing: the next tick finds the batch where it stands and carries on.
``attempts`` counts broadcasts of the current bytes; a replacement restarts it.

Chains reorganize (a proof-of-stake head, an anvil killed before it saved its state), so a
confirmed batch is not final for this node: every tick first re-checks the chain (``_recheck``).
The contract's ``lastAnchored(member)`` covers the whole history in one call: a confirmed batch
beyond it is no longer on chain and becomes ``lost``. The newest RECHECK_BATCHES confirmed
batches are also looked up by receipt: one whose transaction moved to another block (or
vanished while the range is still anchored, by another signing) goes back to ``sent`` and is
followed again. A lost batch keeps its range, root and entries (they count as unanchored
while it is not confirmed) and is re-sent in seq order, lowest first, so the contract's gap
rule holds: its old bytes when their nonce is the chain's next one, else a new signing at the
chain's nonce (the node's count, not ours: after a reorg our last used nonce is not on chain).
Every timestamp comes from one clock advanced through the tick (``now`` plus the time spent),
so ``created <= sent_at <= confirmed_at`` holds on each row.

When the chain shows something this node did not expect (the batch's nonce used while its
transaction is unknown, a reverted receipt, a no-op repeat), the contract's ``Anchored``
events decide: the batch is confirmed with the transaction that anchored exactly its range
and root, re-signed with a fresh nonce when its nonce went to an unrelated transaction, or
reported as a conflict for an operator (never silently re-anchored). The events, not the
contract's storage, are the per-range record: the contract keeps only the member's last seq,
an accumulator and its 16 most recent anchors (an exact repeat of one of those is a no-op
without event; a repeat of an older one reverts ``Overlap``), and both outcomes end here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from .chain import Artifact, ChainClient, ContractRejected, LedgerUnavailable, load_artifact
from .locks import single_flight
from .models import AnchorBatch, AuditEntry
from .selectors import deployed_contracts
from .services import audit_sequence
from .verify import merkle

logger = logging.getLogger(__name__)

# pg_try_advisory_lock key of the anchoring tick ("CARKANCH" folded into a bigint).
ANCHOR_LOCK = 0x4341524B414E4348
OPEN_STATUSES = ("pending", "sent", "lost")
CONTRACT = "AuditAnchor"
TICK_BUDGET_SECONDS = 30.0  # a tick stops starting new steps after this (task soft limit 45 s)


@dataclass
class TickReport:
    """What one tick did; ``unavailable`` / ``conflict`` say why it stopped early."""

    busy: bool = False
    sequenced: int = 0
    created: list[tuple[int, int]] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    replaced: list[tuple[str, str]] = field(default_factory=list)
    confirmed: list[tuple[int, int]] = field(default_factory=list)
    lost: list[tuple[int, int]] = field(default_factory=list)
    moved: list[tuple[int, int]] = field(default_factory=list)
    unavailable: str | None = None
    conflict: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def anchor_tick(*, client: ChainClient, now: datetime | None = None,
                recheck_all: bool = False) -> TickReport:
    """Move the audit log's anchoring forward as far as the chain allows right now.

    Safe to call twice at once and from several workers: only one runs, the other
    reports ``busy``. An unreachable node ends the tick with ``unavailable`` set and
    nothing lost; the next tick resumes from the database. ``recheck_all`` looks up every
    confirmed batch's receipt, not only the newest RECHECK_BATCHES (``ledger_reanchor``).
    """
    report = TickReport()
    with single_flight(ANCHOR_LOCK) as acquired:
        if not acquired:
            report.busy = True
            return report
        try:
            _run(client, now or timezone.now(), report, recheck_all)
        except LedgerUnavailable as error:
            report.unavailable = str(error)
            logger.warning("audit anchoring paused: %s", error)
        except ContractRejected as error:
            report.conflict = f"the contract refuses the next anchor: {error}"
            logger.error("audit anchoring stopped: %s", report.conflict)
    return report


def _run(client: ChainClient, start: datetime, report: TickReport, recheck_all: bool) -> None:
    """Re-check what is confirmed, then step until a step has to wait for the chain (or the
    budget is spent). ``now`` is ``start`` plus the time spent so far: one clock for every row."""
    began = time.monotonic()
    try:
        _recheck(client, start, report, everything=recheck_all)
    except LedgerUnavailable:
        report.sequenced += audit_sequence()  # the chain is down: entries still get their seq
        raise
    if report.conflict:
        return
    while (spent := time.monotonic() - began) < TICK_BUDGET_SECONDS:
        now = start + timedelta(seconds=spent)
        batch = AnchorBatch.objects.filter(status__in=OPEN_STATUSES).order_by("first_seq").first()
        progressed = (_advance(client, batch, now, report) if batch
                      else _create_and_send(client, now, report))
        if not progressed:
            return


# --- an open batch ----------------------------------------------------------------------------

def _advance(client: ChainClient, batch: AnchorBatch, now: datetime, report: TickReport) -> bool:
    if batch.status == "pending":
        return _send(client, batch, now, report.sent)
    if batch.status == "lost":
        return _resend_lost(client, batch, now, report)
    receipt = client.receipt(batch.tx_hash)
    if receipt is None:
        if client.nonce(batch.signer, pending=False) > batch.nonce:
            return _reconcile(client, batch, now, report)
        if now - batch.sent_at < timedelta(seconds=settings.AUDIT_ANCHOR_RESEND_SECONDS):
            return False
        if batch.attempts < settings.AUDIT_ANCHOR_REPLACE_AFTER:
            _send(client, batch, now, report.resent)
            return False
        return _replace(client, batch, now, report, fresh_nonce=False)
    if receipt["status"] == 1 and receipt["logs"] > 0:
        return _confirm(client, batch, receipt, now, report)
    return _reconcile(client, batch, now, report)


def _send(client: ChainClient, batch: AnchorBatch, now: datetime, into: list[str]) -> bool:
    """Broadcast the persisted bytes; only then record the send."""
    client.send_raw(bytes(batch.raw_tx))
    batch.status, batch.sent_at, batch.attempts = "sent", now, batch.attempts + 1
    batch.save(update_fields=["status", "sent_at", "attempts"])
    into.append(batch.tx_hash)
    return True


def _confirm(client: ChainClient, batch: AnchorBatch, mined: dict, now: datetime,
             report: TickReport) -> bool:
    """Confirm once the block is deep enough; ``mined`` is a receipt or an Anchored event."""
    depth = client.block_number() - mined["block_number"] + 1
    if depth < settings.AUDIT_ANCHOR_CONFIRMATIONS:
        return False
    with transaction.atomic():
        if mined["transaction"] != batch.tx_hash:
            _remember_replaced(batch, batch.tx_hash)
            batch.tx_hash = mined["transaction"]
        batch.status, batch.confirmed_at = "confirmed", now
        batch.block_number, batch.block_hash = mined["block_number"], mined["block_hash"]
        batch.save()
    report.confirmed.append((batch.first_seq, batch.last_seq))
    logger.info("audit seq %s..%s anchored in block %s", batch.first_seq, batch.last_seq,
                batch.block_number)
    return True


def _reconcile(client: ChainClient, batch: AnchorBatch, now: datetime, report: TickReport) -> bool:
    """The batch's nonce is used but not (visibly) by an anchor of ours: ask the events.

    Reached when the receipt is missing although the nonce is used, reverted (e.g. a repeat
    older than the contract's no-op window), or a no-op (a repeat of a recent anchor).
    """
    events = client.events(_artifact(), batch.contract, "Anchored",
                           from_block=_deploy_block(batch.chain_id, batch.contract),
                           member=batch.signer, firstSeq=batch.first_seq)
    for event in events:
        if event["args"]["lastSeq"] == batch.last_seq and event["args"]["root"] == bytes(batch.root):
            return _confirm(client, batch, event, now, report)
    if events:
        report.conflict = (f"seq {batch.first_seq}..{batch.last_seq}: transaction {batch.tx_hash} "
                           f"did not anchor it and the chain holds another anchor there")
        logger.error("audit anchoring needs an operator: %s", report.conflict)
        return False
    receipt = client.receipt(batch.tx_hash)
    if receipt is not None:  # mined and reverted without an anchor of ours at first_seq
        report.conflict = (f"seq {batch.first_seq}..{batch.last_seq}: transaction {batch.tx_hash} "
                           f"reverted (member role, or an earlier range missing on chain)")
        logger.error("audit anchoring needs an operator: %s", report.conflict)
        return False
    return _replace(client, batch, now, report, fresh_nonce=True)


def _replace(client: ChainClient, batch: AnchorBatch, now: datetime, report: TickReport, *,
             fresh_nonce: bool, at_nonce: int | None = None) -> bool:
    """Re-sign the batch's call with higher fees; persisted before it is sent.

    Same nonce (so exactly one of the two can be mined) unless that nonce was used by an
    unrelated transaction, in which case the next free nonce; ``at_nonce`` when the caller
    knows the nonce (a lost batch whose nonce lies beyond the chain's count).
    """
    if client.address != batch.signer:
        report.conflict = f"seq {batch.first_seq}..{batch.last_seq} is signed by {batch.signer}, not this key"
        return False
    max_fee, priority = client.fee_suggestion()
    max_fee = max(max_fee, _bumped(int(batch.max_fee_per_gas)))
    priority = max(priority, _bumped(int(batch.max_priority_fee_per_gas)))
    nonce = _next_nonce(client, batch.signer, batch.chain_id) if fresh_nonce else batch.nonce
    nonce = at_nonce if at_nonce is not None else nonce
    signed = client.signed_call(_artifact(), batch.contract, "anchor", batch.first_seq,
                                batch.last_seq, bytes(batch.root), nonce=nonce,
                                max_fee_per_gas=max(max_fee, priority),
                                max_priority_fee_per_gas=priority)
    old_hash = batch.tx_hash
    with transaction.atomic():
        _remember_replaced(batch, old_hash)
        batch.raw_tx, batch.tx_hash, batch.nonce = signed.raw, signed.tx_hash, nonce
        batch.max_fee_per_gas, batch.max_priority_fee_per_gas = max(max_fee, priority), priority
        batch.status, batch.attempts, batch.sent_at = "pending", 0, None
        batch.save()
    report.replaced.append((old_hash, signed.tx_hash))
    logger.info("audit seq %s..%s: transaction %s replaced by %s", batch.first_seq,
                batch.last_seq, old_hash, signed.tx_hash)
    return _send(client, batch, now, report.sent)


def _bumped(fee: int) -> int:
    """At least 12.5 % more (nodes require 10 % to accept a replacement)."""
    return fee + -(-fee // 8) + 1


def _remember_replaced(batch: AnchorBatch, tx_hash: str) -> None:
    """Keep a superseded hash on the batch: an old signing may still be the one that gets mined."""
    batch.replaced_tx_hashes = [*batch.replaced_tx_hashes, tx_hash]


# --- reorganizations --------------------------------------------------------------------------

def _recheck(client: ChainClient, now: datetime, report: TickReport, *, everything: bool = False) -> None:
    """Send back to the open states the confirmed batches the chain no longer holds as confirmed.

    One ``lastAnchored`` call covers the whole history (every range is contiguous, so a
    confirmed batch past it is gone); receipts of the newest batches catch a transaction that
    moved to another block, whose stored block number and hash a proof would name wrongly.
    """
    chain_id = client.chain_id()
    entry = _deployment(chain_id)
    mine = AnchorBatch.objects.filter(chain_id=chain_id, signer=client.address, status="confirmed",
                                      contract=entry["address"] if entry else None)
    if entry is None or not mine.exists():
        return
    if not client.has_code(entry["address"]):
        raise LedgerUnavailable(f"{CONTRACT} at {entry['address']} has no code on chain {chain_id} "
                                "(chain reset? run manage.py chain_deploy)")
    last = client.call(_artifact(), entry["address"], "lastAnchored", client.address)
    if last and not AnchorBatch.objects.filter(chain_id=chain_id, contract=entry["address"],
                                               signer=client.address, last_seq=last).exists():
        report.conflict = f"the chain's last anchored seq {last} ends none of this node's batches"
        logger.error("audit anchoring needs an operator: %s", report.conflict)
        return
    for batch in mine.filter(last_seq__gt=last).order_by("first_seq"):
        _reopen(batch, "lost", now, report.lost)
    recent = mine.filter(last_seq__lte=last).order_by("-first_seq")
    for batch in recent if everything else recent[:settings.AUDIT_ANCHOR_RECHECK_BATCHES]:
        receipt = client.receipt(batch.tx_hash)
        if receipt is None or receipt["block_hash"] != batch.block_hash or receipt["status"] != 1:
            _reopen(batch, "sent", now, report.moved)


def _reopen(batch: AnchorBatch, status: str, now: datetime, into: list[tuple[int, int]]) -> None:
    """Un-confirm a batch: its entries count as unanchored (proofs answer 409) until it is again."""
    batch.status, batch.lost_at, batch.reorgs = status, now, batch.reorgs + 1
    batch.confirmed_at = batch.block_number = batch.block_hash = None
    batch.save(update_fields=["status", "lost_at", "reorgs", "confirmed_at", "block_number", "block_hash"])
    into.append((batch.first_seq, batch.last_seq))
    logger.warning("audit seq %s..%s: anchor %s is no longer %s on chain; re-anchoring", batch.first_seq,
                   batch.last_seq, batch.tx_hash, "anywhere" if status == "lost" else "where it was confirmed")


def _resend_lost(client: ChainClient, batch: AnchorBatch, now: datetime, report: TickReport) -> bool:
    """Put a lost batch back on chain with the nonce the chain expects now.

    Its old bytes when their nonce is the next one (or already in use again: the old
    transaction back in a pool after a reorg, or another one, which ``_advance`` sorts out),
    else the same call signed at the chain's next nonce: waiting for a nonce the chain
    forgot would wait forever.
    """
    pending = client.nonce(batch.signer, pending=True)
    if pending >= batch.nonce:
        return _send(client, batch, now, report.resent)
    return _replace(client, batch, now, report, fresh_nonce=False, at_nonce=pending)


# --- a new batch ------------------------------------------------------------------------------

def _create_and_send(client: ChainClient, now: datetime, report: TickReport) -> bool:
    """Sequence new entries; when a range is due, sign its anchor, persist it, then send."""
    report.sequenced += audit_sequence()
    due = _due_range(now)
    if due is None:
        return False
    first, leaves = due
    last, root = first + len(leaves) - 1, merkle.root(leaves)
    chain_id = client.chain_id()
    contract = _contract_address(chain_id)
    if not client.has_code(contract):
        # A call to an empty address "succeeds" without a log and would burn the nonce.
        raise LedgerUnavailable(f"{CONTRACT} at {contract} has no code on chain {chain_id} "
                                "(chain reset? run manage.py chain_deploy)")
    nonce = _next_nonce(client, client.address, chain_id)
    max_fee, priority = client.fee_suggestion()
    signed = client.signed_call(_artifact(), contract, "anchor", first, last, root, nonce=nonce,
                                max_fee_per_gas=max_fee, max_priority_fee_per_gas=priority)
    with transaction.atomic():
        batch = AnchorBatch.objects.create(
            created=now, first_seq=first, last_seq=last, root=root, status="pending", chain_id=chain_id,
            contract=contract, signer=client.address, nonce=nonce, raw_tx=signed.raw,
            tx_hash=signed.tx_hash, max_fee_per_gas=max_fee, max_priority_fee_per_gas=priority,
        )
        claimed = (AuditEntry.objects.filter(seq__gte=first, seq__lte=last, batch__isnull=True)
                   .update(batch=batch))
        if claimed != len(leaves):
            raise RuntimeError(f"audit seq {first}..{last} changed while being anchored")
    report.created.append((first, last))
    return _send(client, batch, now, report.sent)


def _due_range(now: datetime) -> tuple[int, list[bytes]] | None:
    """(first seq, leaf hashes) of the next range, when it is full or its oldest entry is due."""
    first = (AnchorBatch.objects.aggregate(last=Max("last_seq"))["last"] or 0) + 1
    limit = settings.AUDIT_ANCHOR_MAX_ENTRIES
    rows = (AuditEntry.objects.filter(seq__gte=first, seq__lt=first + limit)
            .order_by("seq").values_list("seq", "leaf_hash", "recorded"))
    leaves, oldest = [], now
    for expected, (seq, leaf, recorded) in enumerate(rows, start=first):
        if seq != expected:
            break
        leaves.append(bytes(leaf))
        oldest = min(oldest, recorded)
    if not leaves:
        return None
    if len(leaves) < limit and now - oldest < timedelta(seconds=settings.AUDIT_ANCHOR_INTERVAL_SECONDS):
        return None
    return first, leaves


def _next_nonce(client: ChainClient, signer: str, chain_id: int) -> int:
    """Per signing key: the node's pending count, never below the nonce + 1 of a batch in flight.

    Only batches in flight count (a node may not show them yet): a confirmed batch's nonce is
    in the node's count, and a lost one's is not on chain any more, so after a reorganization
    the nonce comes from the chain again, with no gap that nothing would ever fill.
    """
    last = (AnchorBatch.objects.filter(signer=signer, chain_id=chain_id, status__in=("pending", "sent"))
            .aggregate(last=Max("nonce"))["last"])
    pending = client.nonce(signer, pending=True)
    return pending if last is None else max(pending, last + 1)


# --- contract ---------------------------------------------------------------------------------

def _artifact() -> Artifact:
    return load_artifact(CONTRACT, settings.CONTRACTS_BUILD_DIR)


def _deployment(chain_id: int) -> dict | None:
    return deployed_contracts(registry=settings.CHAIN_DEPLOYMENTS_FILE, chain_id=chain_id).get(CONTRACT)


def _contract_address(chain_id: int) -> str:
    entry = _deployment(chain_id)
    if entry is None:
        raise LedgerUnavailable(f"{CONTRACT} is not deployed on chain {chain_id} (manage.py chain_deploy)")
    return entry["address"]


def _deploy_block(chain_id: int, contract: str) -> int:
    entry = _deployment(chain_id)
    return entry.get("block", 0) if entry and entry["address"] == contract else 0
