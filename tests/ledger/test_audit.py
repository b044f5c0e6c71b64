"""The audit log in PostgreSQL: append, sequence, hash chain, and append-only triggers."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime

import pytest
from django.db import IntegrityError, connection, connections, transaction
from fhir.resources.R4B.auditevent import AuditEvent

from ledger.balp import audit_event_balp
from ledger.models import AnchorBatch, AuditEntry, AuditSalt
from ledger.services import audit_append, audit_sequence
from ledger.verify import audit_format

pytestmark = pytest.mark.django_db
WHEN = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def append(n: int = 1, **overrides) -> list[AuditEntry]:
    return [
        audit_append(event={"resourceType": "AuditEvent", "n": i, "b": "é", "a": [1, {"z": 0, "y": 1}]},
                     patient_id="p1", agent="dr-who", outcome="0", recorded=WHEN, **overrides)
        for i in range(n)
    ]


def raw(sql: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])


def make_batch(first: int, last: int, status: str = "confirmed") -> AnchorBatch:
    return AnchorBatch.objects.create(
        first_seq=first, last_seq=last, root=b"\x01" * 32, status=status, chain_id=31337,
        contract="0x" + "11" * 20, signer="0x" + "22" * 20, nonce=0, raw_tx=b"", tx_hash="0x" + "33" * 32,
        max_fee_per_gas=1, max_priority_fee_per_gas=1)


# --- append -----------------------------------------------------------------------------------

def test_append_stores_canonical_json_and_a_fresh_salt_without_a_sequence():
    entry, other = append(2)

    entry.refresh_from_db()
    assert entry.event == '{"a":[1,{"y":1,"z":0}],"b":"é","n":0,"resourceType":"AuditEvent"}'
    assert (entry.seq, entry.prev_hash, entry.entry_hash, entry.leaf_hash, entry.batch) == (None,) * 5
    assert (entry.patient_id, entry.agent, entry.outcome, entry.recorded) == ("p1", "dr-who", "0", WHEN)
    salts = [bytes(AuditSalt.objects.get(entry=e).salt) for e in (entry, other)]
    assert [len(s) for s in salts] == [32, 32] and salts[0] != salts[1]


def test_an_unknown_outcome_is_refused_and_nothing_is_written():
    with pytest.raises(ValueError):
        audit_append(event={}, patient_id=None, agent="a", outcome="1")

    assert AuditEntry.objects.count() == 0 and AuditSalt.objects.count() == 0


# --- sequence ---------------------------------------------------------------------------------

def test_sequence_numbers_entries_in_id_order_and_chains_their_hashes():
    entries = append(5)

    assert audit_sequence() == 5
    assert audit_sequence() == 0

    prev = bytes(32)
    for seq, entry in enumerate(entries, start=1):
        entry.refresh_from_db()
        salt = bytes(entry.auditsalt.salt)
        data = entry.event.encode()
        seq8 = seq.to_bytes(8, "big")
        assert entry.seq == seq
        assert bytes(entry.prev_hash) == prev
        assert bytes(entry.leaf_hash) == hashlib.sha256(b"\x00" + salt + seq8 + data).digest()
        assert bytes(entry.entry_hash) == hashlib.sha256(b"\x02" + prev + seq8 + bytes(entry.leaf_hash)).digest()
        assert entry.hash_version == 2
        prev = bytes(entry.entry_hash)


def test_sequence_takes_at_most_limit_and_continues_the_chain():
    entries = append(5)

    assert audit_sequence(limit=2) == 2
    assert audit_sequence(limit=2) == 2
    assert audit_sequence(limit=2) == 1

    seqs = [AuditEntry.objects.get(pk=e.pk).seq for e in entries]
    assert seqs == [1, 2, 3, 4, 5]
    third = AuditEntry.objects.get(seq=3)
    assert bytes(third.prev_hash) == bytes(AuditEntry.objects.get(seq=2).entry_hash)


def test_an_entry_whose_salt_was_erased_before_sequencing_is_still_sequenced():
    entry, = append(1)
    AuditSalt.objects.filter(entry=entry).delete()

    assert audit_sequence() == 1
    entry.refresh_from_db()
    assert entry.seq == 1 and len(bytes(entry.leaf_hash)) == 32


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_sequencers_leave_no_gap_and_no_duplicate():
    append(300)
    results: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def sequencer():
        try:
            start.wait()
            while count := audit_sequence(limit=7):
                results.append(count)
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connections.close_all()

    def writer():
        try:
            start.wait()
            append(100)
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sequencer), threading.Thread(target=sequencer),
               threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    audit_sequence()

    assert errors == []
    seqs = sorted(AuditEntry.objects.values_list("seq", flat=True))
    assert seqs == list(range(1, 401))
    chain = list(AuditEntry.objects.order_by("seq").values_list("prev_hash", "entry_hash"))
    assert all(bytes(chain[i][0]) == bytes(chain[i - 1][1]) for i in range(1, len(chain)))


# --- append-only, in the database ---------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "UPDATE ledger_auditentry SET event = '{}' WHERE id = %s",
    "UPDATE ledger_auditentry SET agent = 'someone-else' WHERE id = %s",
    "UPDATE ledger_auditentry SET patient_id = NULL WHERE id = %s",
    "UPDATE ledger_auditentry SET recorded = now() WHERE id = %s",
    "UPDATE ledger_auditentry SET outcome = '4' WHERE id = %s",
    "UPDATE ledger_auditentry SET seq = 99 WHERE id = %s",
    "UPDATE ledger_auditentry SET entry_hash = '\\x00' WHERE id = %s",
    "UPDATE ledger_auditentry SET leaf_hash = NULL WHERE id = %s",
    "DELETE FROM ledger_auditentry WHERE id = %s",
])
def test_changing_or_deleting_a_sequenced_entry_is_refused_by_postgres(sql):
    entry, = append(1)
    audit_sequence()
    before = AuditEntry.objects.values().get(pk=entry.pk)

    with pytest.raises(IntegrityError, match="append-only|already sequenced"), transaction.atomic():
        raw(sql, [entry.pk])

    assert AuditEntry.objects.values().get(pk=entry.pk) == before


def test_the_content_of_an_unsequenced_entry_cannot_change_either():
    entry, = append(1)

    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        raw("UPDATE ledger_auditentry SET event = '{}', seq = 1 WHERE id = %s", [entry.pk])

    entry.refresh_from_db()
    assert entry.seq is None and entry.event.startswith('{"a"')


def test_sequencing_an_unsequenced_entry_is_the_allowed_update():
    entry, = append(1)

    raw("UPDATE ledger_auditentry SET seq = 7, prev_hash = %s, entry_hash = %s, leaf_hash = %s "
        "WHERE id = %s", [b"\x00" * 32, b"\x01" * 32, b"\x02" * 32, entry.pk])

    entry.refresh_from_db()
    assert entry.seq == 7 and bytes(entry.leaf_hash) == b"\x02" * 32


def test_an_entry_joins_a_batch_once_and_moves_only_when_that_batch_is_replaced():
    entry, = append(1)
    audit_sequence()
    first, second = make_batch(1, 1, status="sent"), make_batch(2, 2)

    AuditEntry.objects.filter(pk=entry.pk).update(batch=first)
    with pytest.raises(IntegrityError, match="replaced"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).update(batch=second)
    assert AuditEntry.objects.get(pk=entry.pk).batch_id == first.pk

    AnchorBatch.objects.filter(pk=first.pk).update(status="replaced")
    AuditEntry.objects.filter(pk=entry.pk).update(batch=second)
    assert AuditEntry.objects.get(pk=entry.pk).batch_id == second.pk


def test_a_salt_can_be_erased_but_never_changed():
    entry, = append(1)
    salt = bytes(AuditSalt.objects.get(entry=entry).salt)

    with pytest.raises(IntegrityError, match="cannot be updated"), transaction.atomic():
        raw("UPDATE ledger_auditsalt SET salt = %s WHERE entry_id = %s", [b"\x00" * 32, entry.pk])
    assert bytes(AuditSalt.objects.get(entry=entry).salt) == salt

    AuditSalt.objects.filter(entry=entry).delete()
    assert not AuditSalt.objects.filter(entry=entry).exists()
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


# --- the AuditEvent --------------------------------------------------------------------------

@pytest.mark.parametrize(("interaction", "action"), [
    ("read", "R"), ("vread", "R"), ("create", "C"), ("update", "U"), ("patch", "U"),
    ("delete", "D"), ("search-type", "E"), ("history", "R"), ("operation", "E"),
])
def test_balp_events_are_valid_fhir_auditevents(interaction, action):
    event = audit_event_balp(interaction=interaction, agent="dr-who", outcome="0", recorded=WHEN,
                             observer="carrack-node-1", resource="Observation/o1/_history/2",
                             patient="p1", query="code=1234" if interaction.startswith("search") else None,
                             client="his-1")

    parsed = AuditEvent.model_validate(event)
    assert parsed.action == action
    assert event["subtype"][0]["code"] == interaction
    assert [e["what"]["reference"] for e in event["entity"] if "what" in e] == [
        "Patient/p1", "Observation/o1/_history/2"]
    assert [e["role"]["code"] for e in event["entity"]][:2] == ["1", "4"]
    user = event["agent"][0]
    assert user["who"]["identifier"]["value"] == "dr-who" and user["requestor"] is True
    assert event["source"]["observer"]["display"] == "carrack-node-1"
    assert "outcomeDesc" not in event and "meta" not in event


def test_a_break_the_glass_access_is_flagged_and_a_denied_one_has_its_outcome():
    event = audit_event_balp(interaction="read", agent="dr-who", outcome="4", recorded=WHEN,
                             observer="node", resource="Patient/p9", patient="p9",
                             break_glass=True, break_glass_reason="unconscious in ER")

    AuditEvent.model_validate(event)
    codes = [c["code"] for p in event["agent"][0]["purposeOfUse"] for c in p["coding"]]
    assert codes == ["TREAT", "BTG"]
    assert event["meta"]["security"] == [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                          "code": "BTG"}]
    assert (event["outcome"], event["outcomeDesc"]) == ("4", "Minor failure")


def test_canonical_json_is_sorted_compact_utf8():
    assert audit_format.canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'
