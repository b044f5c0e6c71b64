"""The audit log's writes: append on the request path, sequence and hash off it.

``audit_append`` runs inside every access's transaction, so it only inserts (no counter,
no lock). ``audit_sequence`` runs in a worker, single-flight under an advisory lock, and
gives committed entries their contiguous ``seq`` and hashes. Formats (canonical JSON,
entry hash, leaf hash): docs/audit-ledger.md.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from ledger.models import AuditEntry
from ledger.verify.audit_format import GENESIS_HASH, HASH_V2, canonical_json, chain_hash, leaf_hash

# pg_advisory_xact_lock key of the sequencer ("carrack-audit-seq" folded into a bigint).
SEQUENCE_LOCK = 0x4341524B53455131
SALT_BYTES = 32
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
    entry = AuditEntry(recorded=recorded or timezone.now(), event=canonical_json(event),
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
        seq, prev = (last[0], bytes(last[1])) if last else (0, GENESIS_HASH)
        pending = (AuditEntry.objects.filter(seq__isnull=True).order_by("id")
                   .values_list("id", "event", "auditsalt__salt")[:limit])
        rows: list[tuple[int, int, bytes, bytes, bytes]] = []
        for entry_id, event, salt in pending:
            seq += 1
            leaf = leaf_hash(bytes(salt) if salt is not None else secrets.token_bytes(SALT_BYTES),
                                    seq, event.encode())
            entry_hash = chain_hash(prev, seq, leaf)  # hash version 2: over the salted leaf
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
            [HASH_V2, ids, seqs, prevs, hashes, leaves],
        )
        if cursor.rowcount != len(rows):
            raise RuntimeError("audit entries changed while being sequenced")
