"""``manage.py ledger_verify`` finds a changed row even when someone bypasses the triggers."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from ledger.models import AnchorBatch
from ledger.verify import audit_format
from tests.ledger.conftest import RPC, anchored_entries

pytestmark = [pytest.mark.django_db, pytest.mark.chain]


@pytest.fixture
def ledger(deployed, chain, audit_anchor_artifact):
    """Ten entries anchored as 1..6 and 7..10, plus two sequenced but not anchored yet."""
    return anchored_entries(deployed=deployed, chain=chain, artifact=audit_anchor_artifact, count=12,
                            ranges=[(1, 6), (7, 10)])


def verify(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("ledger_verify", "--rpc", RPC, *args, stdout=out)
    return out.getvalue()


def as_superuser(sql: str, params: list) -> None:
    """What an attacker with database superuser rights can do: bypass the triggers."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)
        cursor.execute("SET LOCAL session_replication_role = origin")


def test_an_untouched_ledger_verifies(ledger):
    assert verify() == "ok: 12 entries, 2 batches\n"


def test_an_empty_ledger_verifies(db):
    assert verify("--offline") == "ok: 0 entries, 0 batches\n"


def test_a_changed_event_is_named_by_seq_and_id(ledger):
    as_superuser("UPDATE ledger_auditentry SET event = replace(event, '\"n\":4', '\"n\":40') WHERE seq = 5",
                 [])

    with pytest.raises(CommandError, match=rf"entry seq 5 \(id {ledger[4].pk}\): the entry hash"):
        verify()


def test_a_rehashed_forgery_still_breaks_the_anchored_root(ledger):
    """Recomputing the hash chain and the leaf after the change is caught by the root."""
    as_superuser("UPDATE ledger_auditentry SET event = '{}' WHERE seq = 8", [])
    cursor = connection.cursor()
    rows = list(cursor.execute(
        "SELECT e.seq, e.event, e.prev_hash, s.salt FROM ledger_auditentry e "
        "JOIN ledger_auditsalt s ON s.entry_id = e.id WHERE e.seq >= 8 ORDER BY e.seq"))
    prev = bytes(rows[0][2])
    for seq, event, _, salt in rows:
        leaf = audit_format.leaf_hash(bytes(salt), seq, event.encode())
        new_prev, prev = prev, audit_format.chain_hash(prev, seq, leaf)
        as_superuser("UPDATE ledger_auditentry SET prev_hash = %s, entry_hash = %s, leaf_hash = %s "
                     "WHERE seq = %s", [new_prev, prev, leaf, seq])

    with pytest.raises(CommandError, match=r"batch 7\.\.10 .*recomputed root differs"):
        verify()


def test_a_changed_leaf_is_named(ledger):
    as_superuser("UPDATE ledger_auditentry SET leaf_hash = %s WHERE seq = 2", [b"\x00" * 32])

    with pytest.raises(CommandError, match=rf"entry seq 2 \(id {ledger[1].pk}\): the leaf hash"):
        verify()


def test_a_deleted_entry_is_named(ledger):
    as_superuser("DELETE FROM ledger_auditsalt WHERE entry_id = %s", [ledger[2].pk])
    as_superuser("DELETE FROM ledger_auditentry WHERE seq = 3", [])

    with pytest.raises(CommandError, match=r"entry seq 3 \(id \d+\): the sequence jumps to 4"):
        verify()


def test_a_batch_root_changed_in_the_database_and_recomputed_is_refused_by_the_chain(ledger):
    batch = AnchorBatch.objects.get(first_seq=7)
    AnchorBatch.objects.filter(pk=batch.pk).update(tx_hash=AnchorBatch.objects.get(first_seq=1).tx_hash)

    with pytest.raises(CommandError, match=r"batch 7\.\.10: on chain, .*not in the stated block|"
                                           r"batch 7\.\.10: on chain, .*no Anchored event"):
        verify()
    assert verify("--offline") == "ok: 12 entries, 2 batches\n"


def test_an_anchor_the_database_does_not_know_is_caught_by_the_accumulator(ledger, deployed, chain,
                                                                          audit_anchor_artifact):
    """Every batch's event still checks out; only the member's on-chain history shows the extra."""
    address = deployed["AuditAnchor"]["address"]
    chain.transact(audit_anchor_artifact, address, "anchor", 11, 12, b"\x42" * 32)

    with pytest.raises(CommandError, match=r"on chain, member .* has 3 anchors, "
                                           r"the batches say 2 confirmed of 2"):
        verify()
    assert verify("--offline") == "ok: 12 entries, 2 batches\n"


def test_a_batch_mined_but_not_yet_confirmed_is_no_false_alarm(ledger):
    AnchorBatch.objects.filter(first_seq=7).update(status="sent")

    assert verify() == "ok: 12 entries, 1 batches\n"
