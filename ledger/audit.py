"""The audit log: append on the request path, sequence and hash off it, read for proofs.

``audit_append`` runs inside every FHIR interaction's transaction, so it only inserts
(no counter, no lock). ``audit_sequence`` runs in a worker, single-flight under an
advisory lock, and gives committed entries their contiguous ``seq`` and hashes.
Formats (canonical JSON, entry hash, leaf hash): docs/audit-ledger.md.
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from . import merkle, proofs
from .models import AnchorBatch, AuditEntry, AuditSalt

# pg_advisory_xact_lock key of the sequencer ("carrack-audit-seq" folded into a bigint).
SEQUENCE_LOCK = 0x4341524B53455131
SALT_BYTES = 32
# agent.policy of an access a consent token allowed: this prefix and the token id (0x…).
CONSENT_TOKEN_URN = "urn:carrack:consent-token:"
# A device agent (a DICOM AE title): ":" is in no Django username, so no account can claim it.
DEVICE_AGENT_PREFIX = "urn:dicom:ae:"
OUTCOMES = {"0", "4", "8", "12"}


def audit_append(*, event: dict, patient_id: str | None, agent: str, outcome: str,
                 recorded: datetime | None = None) -> AuditEntry:
    """Record one access in the caller's transaction; an access that cannot be audited fails.

    One statement inserts the entry and its salt (this runs on every request), nothing
    else: the sequence number and hashes come later from ``audit_sequence`` so the request
    path never waits on a shared counter.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"AuditEvent outcome must be one of {sorted(OUTCOMES)}")
    entry = AuditEntry(recorded=recorded or timezone.now(), event=proofs.canonical_json(event),
                       patient_id=patient_id, agent=agent, outcome=outcome)
    # Both rows belong to the access's transaction (no savepoint of their own) and go with it.
    with connection.cursor() as cursor:
        cursor.execute(_APPEND_SQL, [entry.recorded, entry.event, patient_id, agent, outcome,
                                     secrets.token_bytes(SALT_BYTES)])
        entry.pk = cursor.fetchone()[0]
    entry._state.adding, entry._state.db = False, connection.alias
    return entry


_APPEND_SQL = """
WITH entry AS (
    INSERT INTO ledger_auditentry (recorded, event, patient_id, agent, outcome)
    VALUES (%s, %s, %s, %s, %s) RETURNING id
)
INSERT INTO ledger_auditsalt (entry_id, salt) SELECT id, %s FROM entry RETURNING entry_id
"""


def audit_sequence(*, limit: int = 10_000) -> int:
    """Give committed unsequenced entries the next seq numbers and hashes; return how many.

    Single-flight: the advisory lock serializes sequencers across processes, and under
    READ COMMITTED each statement after the lock sees the previous holder's commit, so two
    workers never produce a gap or a duplicate. An entry whose salt was already erased is
    hashed with a throwaway salt, which keeps it unlinkable as the erasure intended.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEQUENCE_LOCK])
        last = (AuditEntry.objects.filter(seq__isnull=False).order_by("-seq")
                .values_list("seq", "entry_hash").first())
        seq, prev = (last[0], bytes(last[1])) if last else (0, proofs.GENESIS_HASH)
        pending = (AuditEntry.objects.filter(seq__isnull=True).order_by("id")
                   .values_list("id", "event", "auditsalt__salt")[:limit])
        rows: list[tuple[int, int, bytes, bytes, bytes]] = []
        for entry_id, event, salt in pending:
            seq += 1
            leaf = proofs.leaf_hash(bytes(salt) if salt is not None else secrets.token_bytes(SALT_BYTES),
                                    seq, event.encode())
            entry_hash = proofs.chain_hash(prev, seq, leaf)  # hash version 2: over the salted leaf
            rows.append((entry_id, seq, prev, entry_hash, leaf))
            prev = entry_hash
        _write_sequence(rows)
    return len(rows)


def _write_sequence(rows: list[tuple[int, int, bytes, bytes, bytes]]) -> None:
    if not rows:
        return
    ids, seqs, prevs, hashes, leaves = (list(column) for column in zip(*rows))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE ledger_auditentry AS e
               SET seq = v.seq, prev_hash = v.prev, entry_hash = v.hash, leaf_hash = v.leaf,
                   hash_version = %s
              FROM unnest(%s::bigint[], %s::bigint[], %s::bytea[], %s::bytea[], %s::bytea[])
                   AS v(id, seq, prev, hash, leaf)
             WHERE e.id = v.id AND e.seq IS NULL
            """,
            [proofs.HASH_V2, ids, seqs, prevs, hashes, leaves],
        )
        if cursor.rowcount != len(rows):
            raise RuntimeError("audit entries changed while being sequenced")


# --- selectors -------------------------------------------------------------------------------

def audit_entry_get(*, entry_id: int, within: Q | None = None) -> AuditEntry | None:
    """The entry, if it exists and (given ``within``, the caller's readable entries) is readable."""
    entries = AuditEntry.objects.select_related("batch").filter(id=entry_id)
    return (entries.filter(within) if within is not None else entries).first()


def audit_chain_is_salted(*, entry: AuditEntry) -> bool:
    """Whether the entry's prev_hash and entry_hash are both hash version 2 (safe to show).

    A version 1 hash is over the bare event: shown, it would confirm a guessed event, the
    entry's own (entry_hash) or its predecessor's (prev_hash).
    """
    if entry.hash_version != proofs.HASH_V2:
        return False
    before = AuditEntry.objects.filter(seq=entry.seq - 1).values_list("hash_version", flat=True)
    return entry.seq == 1 or before.first() == proofs.HASH_V2


def audit_salt_get(*, entry: AuditEntry) -> bytes | None:
    salt = AuditSalt.objects.filter(entry=entry).values_list("salt", flat=True).first()
    return bytes(salt) if salt is not None else None


def audit_range_leaves(*, first_seq: int, last_seq: int) -> list[bytes]:
    """Leaf hashes of seq first..last in order: the input of the range's Merkle root."""
    leaves = (AuditEntry.objects.filter(seq__gte=first_seq, seq__lte=last_seq)
              .order_by("seq").values_list("leaf_hash", flat=True))
    result = [bytes(leaf) for leaf in leaves]
    if len(result) != last_seq - first_seq + 1:
        raise ValueError(f"seq {first_seq}..{last_seq} is not fully sequenced")
    return result


def audit_last_seq() -> int:
    last = AuditEntry.objects.filter(seq__isnull=False).order_by("-seq").values_list("seq", flat=True)
    return last.first() or 0


def audit_confirmed_batches() -> list[AnchorBatch]:
    return list(AnchorBatch.objects.filter(status="confirmed").order_by("first_seq"))


# --- IHE BALP AuditEvent ---------------------------------------------------------------------

INTERACTION_ACTIONS = {
    "create": "C", "read": "R", "vread": "R", "update": "U", "patch": "U", "delete": "D",
    "history": "R", "history-instance": "R", "history-type": "R", "history-system": "R",
    "search": "E", "search-type": "E", "search-system": "E", "operation": "E",
    "capabilities": "R", "transaction": "E", "batch": "E",
}
OUTCOME_TEXT = {"0": "Success", "4": "Minor failure", "8": "Serious failure", "12": "Major failure"}
_V3_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"


def audit_event_balp(*, interaction: str, agent: str, outcome: str, recorded: datetime,
                     observer: str, resource: str | None = None, patient: str | None = None,
                     query: str | None = None, client: str | None = None,
                     written: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
                     purpose_of_use: str = "TREAT", break_glass: bool = False,
                     break_glass_reason: str | None = None,
                     outcome_description: str | None = None,
                     consent_tokens: list[str] | tuple[str, ...] = (), device: bool = False) -> dict:
    """A FHIR R4 AuditEvent in the IHE Basic Audit Log Patterns (BALP) RESTful shape.

    ``resource`` is a relative reference (``Observation/1/_history/2``), ``written`` the
    (reference, create/update/delete) of each write of a Bundle, entities with their lifecycle,
    ``patient`` the patient's id, ``query`` the search string, ``observer`` this node's name. Break the
    glass adds ``BTG`` to the user's purposeOfUse (with the reason as text) and to the
    event's purposeOfEvent, so it can be searched and reported. ``consent_tokens`` are the
    consent tokens that allowed the access; they become the user agent's ``policy`` URIs.
    With ``device`` the requestor is a device, not a user (a DICOM AE, ``agent`` =
    ``DEVICE_AGENT_PREFIX`` + AE title): an agent of type Source Role ID whose ``who`` is a Device.
    """
    if interaction not in INTERACTION_ACTIONS:
        raise ValueError(f"unknown FHIR interaction {interaction!r}")
    purposes = [{"coding": [{"system": _V3_REASON, "code": purpose_of_use}]}]
    if break_glass:
        purposes.append({"coding": [{"system": _V3_REASON, "code": "BTG", "display": "break the glass"}],
                         **({"text": break_glass_reason} if break_glass_reason else {})})
    event: dict = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "Restful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": interaction}],
        "action": INTERACTION_ACTIONS[interaction],
        "recorded": recorded.isoformat(),
        "outcome": outcome,
        "purposeOfEvent": purposes,
        "agent": _agents(agent=agent, client=client, observer=observer, purposes=purposes,
                         policies=[f"{CONSENT_TOKEN_URN}{token}" for token in consent_tokens], device=device),
        "source": {"observer": {"display": observer}, "type": [{
            "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
            "display": "Application Server"}]},
        "entity": _entities(resource=resource, written=written, patient=patient, query=query),
    }
    if outcome != "0":
        event["outcomeDesc"] = outcome_description or OUTCOME_TEXT[outcome]
    if break_glass:
        event["meta"] = {"security": [{"system": _V3_REASON, "code": "BTG"}]}
    return event


def _agents(*, agent: str, client: str | None, observer: str, purposes: list[dict],
            policies: list[str], device: bool = False) -> list[dict]:
    user = {
        "type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"} if device else
                            {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                             "code": "IRCP", "display": "information recipient"}]},
        "who": {"type": "Device", "identifier": {"value": agent}} if device else {"identifier": {"value": agent}},
        "requestor": True,
        **({"policy": policies} if policies else {}),
        "purposeOfUse": purposes,
    }
    agents = [user, {
        "type": {"coding": [{"system": _DCM, "code": "110152", "display": "Destination Role ID"}]},
        "who": {"display": observer},
        "requestor": False,
    }]
    if client:
        agents.insert(1, {
            "type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
            "who": {"identifier": {"value": client}},
            "requestor": False,
        })
    return agents


def _entities(*, resource: str | None, written, patient: str | None, query: str | None) -> list[dict]:
    entities = []
    if patient:
        entities.append({
            "what": {"reference": f"Patient/{patient}"},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1",
                     "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1",
                     "display": "Patient"},
        })
    if resource:
        entities.append(_domain_resource(resource))
    entities.extend({**_domain_resource(reference), "lifecycle": LIFECYCLES[interaction]}
                    for reference, interaction in written)
    if query is not None:
        entities.append({
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                     "display": "System Object"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24",
                     "display": "Query"},
            "query": base64.b64encode(query.encode()).decode(),
        })
    return entities


def _domain_resource(reference: str) -> dict:
    return {
        "what": {"reference": reference},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                 "display": "System Object"},
        "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4",
                 "display": "Domain Resource"},
    }


_LIFECYCLE = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle"
# What a Bundle's write did to each resource (AuditEvent.entity.lifecycle, ObjectLifecycleEvents).
LIFECYCLES = {
    "create": {"system": _LIFECYCLE, "code": "1", "display": "Origination / Creation"},
    "update": {"system": _LIFECYCLE, "code": "3", "display": "Amendment"},
    "delete": {"system": _LIFECYCLE, "code": "14", "display": "Logical deletion"},
}


# --- verification ----------------------------------------------------------------------------

class LedgerDiffers(Exception):
    """The stored log does not match its own hash chain, its roots or the chain."""


# What an operator reads when the chain lost anchors the database counts as confirmed.
REORG_HINT = ("the chain no longer holds this anchor (a reorganization, or a node restored from an "
              "older state): run manage.py ledger_reanchor, or wait for the anchoring beat "
              "(ledger.anchor_audit) to re-anchor it")
_LOST_ON_CHAIN = ("is not on the chain", "is not in the stated block", "is not on the canonical chain")


def audit_verify(*, rpc_url: str | None, chunk: int = 5_000) -> tuple[int, int]:
    """Recompute the hash chain from seq 1 and each confirmed batch's root; check its anchor.

    Returns (entries, batches) checked; raises ``LedgerDiffers`` naming the first entry
    (seq and id) that differs. ``rpc_url=None`` skips the on-chain checks: each batch's
    ``Anchored`` event, then each member's on-chain accumulator against all its batches.
    """
    batches = audit_confirmed_batches()
    ranges = {batch.first_seq: batch for batch in batches}
    expected, prev, leaves, batch = 0, proofs.GENESIS_HASH, [], None
    rows = (AuditEntry.objects.filter(seq__isnull=False).order_by("seq")
            .values_list("seq", "id", "event", "prev_hash", "entry_hash", "leaf_hash", "auditsalt__salt",
                         "hash_version")
            .iterator(chunk_size=chunk))
    for seq, entry_id, event, prev_hash, stored_hash, leaf, salt, version in rows:
        expected += 1
        where = f"entry seq {expected} (id {entry_id})"
        if seq != expected:
            raise LedgerDiffers(f"{where}: the sequence jumps to {seq}")
        data = event.encode()
        if bytes(prev_hash) != prev:
            raise LedgerDiffers(f"{where}: prev_hash does not match the previous entry hash")
        prev = _expected_entry_hash(where, version, prev, seq, data, bytes(leaf),
                                    bytes(salt) if salt is not None else None)
        if bytes(stored_hash) != prev:
            raise LedgerDiffers(f"{where}: the entry hash does not match its content")
        if salt is not None and proofs.leaf_hash(bytes(salt), seq, data) != bytes(leaf):
            raise LedgerDiffers(f"{where}: the leaf hash does not match its content")
        batch = ranges.get(seq, batch)
        if batch is not None and batch.first_seq <= seq <= batch.last_seq:
            leaves.append(bytes(leaf))
            if seq == batch.last_seq:
                _check_batch(batch, leaves, rpc_url)
                leaves = []
    missing = [b for b in batches if b.last_seq > expected]
    if missing:
        raise LedgerDiffers(f"batch {missing[0].first_seq}..{missing[0].last_seq}: entries are missing")
    if rpc_url is not None:
        _check_histories(batches, rpc_url)
    return expected, len(batches)


def _expected_entry_hash(where: str, version: int | None, prev: bytes, seq: int, event: bytes,
                         leaf: bytes, salt: bytes | None) -> bytes:
    """The entry hash recomputed by the entry's own hash version (docs/audit-ledger.md).

    Version 2 chains the leaf, recomputed from the salted event while the salt exists; once
    it is erased only the stored leaf is left, and the event is no longer covered (that is
    what makes the erasure real). NULL on a sequenced row is an entry sequenced by code
    older than version 2: version 1.
    """
    if version in (None, proofs.HASH_V1):
        return proofs.entry_hash(prev, seq, event)
    if version != proofs.HASH_V2:
        raise LedgerDiffers(f"{where}: unknown hash version {version}")
    return proofs.chain_hash(prev, seq, proofs.leaf_hash(salt, seq, event) if salt is not None else leaf)


def _check_batch(batch: AnchorBatch, leaves: list[bytes], rpc_url: str | None) -> None:
    where = f"batch {batch.first_seq}..{batch.last_seq}"
    root = merkle.root(leaves)
    if root != bytes(batch.root):
        raise LedgerDiffers(f"{where} (entry seq {batch.first_seq} onwards): the recomputed root "
                            f"differs from the anchored root")
    if rpc_url is None:
        return
    try:
        proofs.check_anchor(rpc_url, proofs.anchor_fields(batch), root)
    except proofs.ProofInvalid as error:
        lost = any(marker in str(error) for marker in _LOST_ON_CHAIN)
        raise LedgerDiffers(f"{where}: on chain, {error}" + (f"; {REORG_HINT}" if lost else "")) from None


def _check_histories(confirmed: list[AnchorBatch], rpc_url: str) -> None:
    """Per (chain, contract, member): the chain's accumulator covers exactly our batches.

    The per-batch events show that each batch is on chain; this shows that nothing else
    is (an anchor the database lost or never made). Batches still in flight may already be
    mined, so they are offered after the confirmed ones.
    """
    groups: dict[tuple[int, str, str], list[AnchorBatch]] = {}
    for batch in confirmed:
        groups.setdefault((batch.chain_id, batch.contract, batch.signer), []).append(batch)
    for (chain_id, contract, signer), mine in groups.items():
        in_flight = AnchorBatch.objects.filter(chain_id=chain_id, contract=contract, signer=signer,
                                               status__in=("pending", "sent", "lost")).order_by("first_seq")
        ranges = [(b.first_seq, b.last_seq, bytes(b.root)) for b in [*mine, *in_flight]]
        try:
            proofs.check_history(rpc_url, chain_id=chain_id, contract=contract, member=signer,
                                 ranges=ranges, confirmed=len(mine))
        except proofs.ProofInvalid as error:
            raise LedgerDiffers(f"anchors of {signer} on {contract}: on chain, {error}"
                                + _missing_anchors_hint(error, mine)) from None


def _missing_anchors_hint(error: proofs.ProofInvalid, confirmed: list[AnchorBatch]) -> str:
    """Name the first confirmed batch the chain's history no longer counts, when that is the case."""
    counted = re.match(r"member \S+ has (\d+) anchors", str(error))
    if counted is None or int(counted.group(1)) >= len(confirmed):
        return ""
    first = confirmed[int(counted.group(1))]
    return f"; batch {first.first_seq}..{first.last_seq} is the first not counted: {REORG_HINT}"
