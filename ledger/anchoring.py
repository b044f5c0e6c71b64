"""Anchoring the audit log on chain: one signed transaction per contiguous seq range.

The sign/persist/send/resend/replace skeleton is the shared outbox (``ledger.chain.outbox``);
this module is its anchoring ``Purpose`` (the call, what a receipt or a taken nonce means) plus
what only anchoring needs: building ranges, the ``Anchored`` events, and reorganizations.

The beat task calls ``anchor_tick`` every few seconds. A tick is single-flight (PostgreSQL
advisory locks of the tick and of its signing key, try-only: a second caller returns at once)
and drives at most
one open batch through its life, each step in its own short transaction:

    no open batch --build, sign, persist--> pending --send--> sent --N confirmations--> confirmed
    sent, not mined after RESEND_SECONDS            --> send the same bytes again (attempts + 1)
    sent, not mined after REPLACE_AFTER broadcasts  --> re-sign with the same nonce and fees
      (or at the first timeout when the base fee        raised >= 12.5 %, persist, send
       rose above the offer)
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
from django.db.models import Max
from django.utils import timezone

from .chain import Artifact, ChainClient, ContractRejected, LedgerUnavailable, load_artifact, outbox
from .chain.outbox import Call, ForeignSigner
from .models import AnchorBatch, AuditEntry
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
    with outbox.signer_flight(ANCHOR_LOCK, client.address) as acquired:
        if not acquired:
            report.busy = True
            return report
        try:
            _run(client, now or timezone.now(), report, recheck_all)
        except LedgerUnavailable as error:
            report.unavailable = str(error)
            logger.warning("audit anchoring paused: %s", error)
        except ForeignSigner as error:
            batch = error.tx
            report.conflict = f"seq {batch.first_seq}..{batch.last_seq} is signed by {batch.signer}, not this key"
        except ContractRejected as error:
            report.conflict = f"the contract refuses the next anchor: {error}"
            logger.error("audit anchoring stopped: %s", report.conflict)
    return report


class AnchorPurpose:
    """Anchoring's hooks into the outbox, for one tick: they record into its report."""

    def __init__(self, report: TickReport) -> None:
        self.report = report
        self.resend_seconds = settings.AUDIT_ANCHOR_RESEND_SECONDS
        self.replace_after: int | None = settings.AUDIT_ANCHOR_REPLACE_AFTER

    def call(self, batch: AnchorBatch) -> Call:
        return Call(_artifact(), batch.contract, "anchor", (batch.first_seq, batch.last_seq, bytes(batch.root)))

    def mined(self, client: ChainClient, batch: AnchorBatch, receipt: dict, now: datetime) -> bool:
        if receipt["status"] == 1 and receipt["logs"] > 0:
            return _confirm(client, batch, receipt, now, self.report)
        return _reconcile(client, batch, now, self)  # reverted, or a no-op repeat without event

    def nonce_taken(self, client: ChainClient, batch: AnchorBatch, now: datetime) -> bool:
        return _reconcile(client, batch, now, self)

    def sent(self, batch: AnchorBatch, *, again: bool) -> None:
        (self.report.resent if again else self.report.sent).append(batch.tx_hash)

    def replaced(self, batch: AnchorBatch, old_hash: str) -> None:
        self.report.replaced.append((old_hash, batch.tx_hash))
        logger.info("audit seq %s..%s: transaction %s replaced by %s", batch.first_seq,
                    batch.last_seq, old_hash, batch.tx_hash)


def _run(client: ChainClient, start: datetime, report: TickReport, recheck_all: bool) -> None:
    """Re-check what is confirmed, then step until a step has to wait for the chain (or the
    budget is spent). ``now`` is ``start`` plus the time spent so far: one clock for every row."""
    began, purpose = time.monotonic(), AnchorPurpose(report)
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
        progressed = (_advance(client, purpose, batch, now) if batch
                      else _create_and_send(client, purpose, now))
        if not progressed:
            return


# --- an open batch ----------------------------------------------------------------------------

def _advance(client: ChainClient, purpose: AnchorPurpose, batch: AnchorBatch, now: datetime) -> bool:
    if batch.status == "pending":
        return outbox.send(client, purpose, batch, now)
    if batch.status == "lost":
        return _resend_lost(client, purpose, batch, now)
    return outbox.follow(client, purpose, batch, now)


def _confirm(client: ChainClient, batch: AnchorBatch, mined: dict, now: datetime,
             report: TickReport) -> bool:
    """Confirm once the block is deep enough; ``mined`` is a receipt or an Anchored event."""
    if outbox.depth(client, mined) < settings.AUDIT_ANCHOR_CONFIRMATIONS:
        return False
    if mined["transaction"] != batch.tx_hash:  # an earlier signing was mined after all
        batch.replaced_tx_hashes = [*batch.replaced_tx_hashes, batch.tx_hash]
        batch.tx_hash = mined["transaction"]
    batch.status, batch.confirmed_at = "confirmed", now
    batch.block_number, batch.block_hash = mined["block_number"], mined["block_hash"]
    batch.save()
    report.confirmed.append((batch.first_seq, batch.last_seq))
    logger.info("audit seq %s..%s anchored in block %s", batch.first_seq, batch.last_seq,
                batch.block_number)
    return True


def _reconcile(client: ChainClient, batch: AnchorBatch, now: datetime, purpose: AnchorPurpose) -> bool:
    """The batch's nonce is used but not (visibly) by an anchor of ours: ask the events.

    Reached when the receipt is missing although the nonce is used, reverted (e.g. a repeat
    older than the contract's no-op window), or a no-op (a repeat of a recent anchor).
    """
    report = purpose.report
    events = client.events(_artifact(), batch.contract, "Anchored",
                           from_block=outbox.deploy_block(CONTRACT, batch.chain_id, batch.contract),
                           member=batch.signer, firstSeq=batch.first_seq)
    for event in events:
        if event["args"]["lastSeq"] == batch.last_seq and event["args"]["root"] == bytes(batch.root):
            return _confirm(client, batch, event, now, report)
    if events:
        return _needs_operator(report, f"seq {batch.first_seq}..{batch.last_seq}: transaction {batch.tx_hash} "
                                       f"did not anchor it and the chain holds another anchor there")
    receipt = client.receipt(batch.tx_hash)
    if receipt is not None:  # mined and reverted without an anchor of ours at first_seq
        return _needs_operator(report, f"seq {batch.first_seq}..{batch.last_seq}: transaction {batch.tx_hash} "
                                       f"reverted (member role, or an earlier range missing on chain)")
    if client.address != batch.signer:
        raise ForeignSigner(batch)
    return outbox.replace(client, purpose, batch, now,
                          nonce=outbox.next_nonce(client, AnchorBatch, batch.chain_id))


def _needs_operator(report: TickReport, conflict: str) -> bool:
    report.conflict = conflict
    logger.error("audit anchoring needs an operator: %s", conflict)
    return False


# --- reorganizations --------------------------------------------------------------------------

def _recheck(client: ChainClient, now: datetime, report: TickReport, *, everything: bool = False) -> None:
    """Send back to the open states the confirmed batches the chain no longer holds as confirmed.

    One ``lastAnchored`` call covers the whole history (every range is contiguous, so a
    confirmed batch past it is gone); receipts of the newest batches catch a transaction that
    moved to another block, whose stored block number and hash a proof would name wrongly.
    """
    chain_id = client.chain_id()
    entry = outbox.deployment(CONTRACT, chain_id)
    mine = AnchorBatch.objects.filter(chain_id=chain_id, signer=client.address, status="confirmed",
                                      contract=entry["address"] if entry else None)
    if entry is None or not mine.exists():
        return
    outbox.require_code(client, CONTRACT, entry["address"], chain_id)
    last = client.call(_artifact(), entry["address"], "lastAnchored", client.address)
    if last and not AnchorBatch.objects.filter(chain_id=chain_id, contract=entry["address"],
                                               signer=client.address, last_seq=last).exists():
        _needs_operator(report, f"the chain's last anchored seq {last} ends none of this node's batches")
        return
    for batch in mine.filter(last_seq__gt=last).order_by("first_seq"):
        _reopen(batch, "lost", now, report.lost)
    recent = mine.filter(last_seq__lte=last).order_by("-first_seq")
    for batch in recent if everything else recent[:settings.AUDIT_ANCHOR_RECHECK_BATCHES]:
        where, receipt = outbox.recheck(client, batch)
        if where != outbox.KEPT or receipt["status"] != 1:
            _reopen(batch, "sent", now, report.moved)


def _reopen(batch: AnchorBatch, status: str, now: datetime, into: list[tuple[int, int]]) -> None:
    """Un-confirm a batch: its entries count as unanchored (proofs answer 409) until it is again."""
    batch.status, batch.lost_at, batch.reorgs = status, now, batch.reorgs + 1
    batch.confirmed_at = batch.block_number = batch.block_hash = None
    batch.save(update_fields=["status", "lost_at", "reorgs", "confirmed_at", "block_number", "block_hash"])
    into.append((batch.first_seq, batch.last_seq))
    logger.warning("audit seq %s..%s: anchor %s is no longer %s on chain; re-anchoring", batch.first_seq,
                   batch.last_seq, batch.tx_hash, "anywhere" if status == "lost" else "where it was confirmed")


def _resend_lost(client: ChainClient, purpose: AnchorPurpose, batch: AnchorBatch, now: datetime) -> bool:
    """Put a lost batch back on chain with the nonce the chain expects now.

    Its old bytes when their nonce is the next one (or already in use again: the old
    transaction back in a pool after a reorg, or another one, which ``follow`` sorts out),
    else the same call signed at the chain's next nonce: waiting for a nonce the chain
    forgot would wait forever.
    """
    pending = client.nonce(batch.signer, pending=True)
    if pending >= batch.nonce:
        return outbox.send(client, purpose, batch, now, again=True)
    return outbox.replace(client, purpose, batch, now, nonce=pending)


# --- a new batch ------------------------------------------------------------------------------

def _create_and_send(client: ChainClient, purpose: AnchorPurpose, now: datetime) -> bool:
    """Sequence new entries; when a range is due, sign its anchor, persist it, then send."""
    report = purpose.report
    report.sequenced += audit_sequence()
    due = _due_range(now)
    if due is None:
        return False
    first, leaves = due
    last, root = first + len(leaves) - 1, merkle.root(leaves)
    chain_id = client.chain_id()
    contract = outbox.contract_address(CONTRACT, chain_id)
    outbox.require_code(client, CONTRACT, contract, chain_id)
    batch = AnchorBatch(created=now, first_seq=first, last_seq=last, root=root, chain_id=chain_id,
                        contract=contract)

    def claim_entries() -> None:
        claimed = (AuditEntry.objects.filter(seq__gte=first, seq__lte=last, batch__isnull=True)
                   .update(batch=batch))
        if claimed != len(leaves):
            raise RuntimeError(f"audit seq {first}..{last} changed while being anchored")

    nonce = outbox.next_nonce(client, AnchorBatch, chain_id)
    outbox.sign_and_persist(client, purpose, batch, nonce=nonce, fees=client.fee_suggestion(),
                            also=claim_entries)
    report.created.append((first, last))
    return outbox.send(client, purpose, batch, now)


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


def _artifact() -> Artifact:
    return load_artifact(CONTRACT, settings.CONTRACTS_BUILD_DIR)
