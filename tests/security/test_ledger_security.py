"""Red-team issue 11, the ledger's findings, replayed through ``/api/ledger/`` (real PostgreSQL, anvil).

1. A hashes-only audit proof was an oracle: its entry hash was SHA-256 over the bare event.
2. ``?access_token=`` was accepted and SMART scopes ignored; proof reads were not audited.
3. Bad query values, ids and Accept headers answered 500.
4. Proofs of entries or consents the caller may not read answered differently from unknown ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection

from ehr.models import Role
from ledger.models import AuditEntry, AuditSalt, ConsentToken
from ledger.selectors import audit_proof
from ledger.services import audit_append, audit_sequence
from ledger.verify import audit_format
from ledger.verify.proof_binary import MEDIA_TYPE, proof_decode
from tests.consent.test_consent_tokens import consent_body, sync
from tests.ehr.conftest import FhirClient
from tests.imaging.conftest import role_token
from tests.ledger.conftest import RPC, anchor_batch
from tests.security.conftest import HOSPITAL_B, audit_entries_since, last_audit_pk

pytestmark = [pytest.mark.django_db, pytest.mark.chain]
VERIFY = str(Path(sys.executable).parent / "carrack-verify")


def proof_url(entry_id) -> str:
    return f"/api/ledger/audit-events/{entry_id}/proof"


def consent_url(token_id: str) -> str:
    return f"/api/ledger/consents/{token_id}/proof"


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def raw_token(fhir_client) -> str:
    return fhir_client.auth["HTTP_AUTHORIZATION"].removeprefix("Bearer ")


def anchor_all(deployed, chain, artifact) -> None:
    """Sequence what is there and anchor it as one batch, as the anchoring job would."""
    anchored = AuditEntry.objects.filter(batch__isnull=False).order_by("-seq").values_list("seq", flat=True)
    audit_sequence()
    first = (anchored.first() or 0) + 1
    last = AuditEntry.objects.filter(seq__isnull=False).order_by("-seq").values_list("seq", flat=True).first()
    anchor_batch(chain=chain, artifact=artifact, address=deployed["AuditAnchor"]["address"],
                 first=first, last=last)


def run_verify(tmp_path: Path, data: bytes) -> subprocess.CompletedProcess:
    path = tmp_path / "proof"
    path.write_bytes(data)
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run([VERIFY, "audit-proof", str(path), "--rpc", RPC], capture_output=True,
                          text=True, env=env, timeout=60)


@pytest.fixture
def anchored_of_a(patient_of_a, deployed, chain, audit_anchor_artifact) -> list[AuditEntry]:
    """Hospital A's accesses to its patient, sequenced and anchored on chain."""
    anchor_all(deployed, chain, audit_anchor_artifact)
    return list(AuditEntry.objects.select_related("batch")
                .filter(patient_id=patient_of_a["id"], batch__isnull=False).order_by("seq"))


@pytest.fixture
def patient_a_token(patient_of_a) -> str:
    return role_token("patient-a", Role.PATIENT, patient=patient_of_a["id"], scope="user/*.rs user/Consent.cu")


def _only_audit_entry(since: int, outcome: str) -> AuditEntry:
    entries = audit_entries_since(since)
    assert [entry.outcome for entry in entries] == [outcome], entries
    return entries[0]


# --- 1. hashes-only proofs are no oracle -----------------------------------------------------------

def _hashes_in(proof: dict) -> set[bytes]:
    entry, tree = proof["entry"], proof["merkle"]
    values = [entry.get("leaf_hash"), entry.get("prev_hash"), entry.get("entry_hash"), tree["root"],
              *tree["path"]]
    return {bytes.fromhex(v[2:]) for v in values if v}


def _confirms(guess: bytes, seq: int, hashes: set[bytes]) -> bool:
    """Whether any hash in the proof is an unsalted hash of the guessed event (the old formats)."""
    seq8 = seq.to_bytes(8, "big")
    candidates = {hashlib.sha256(guess).digest(), hashlib.sha256(seq8 + guess).digest(),
                  *(audit_format.entry_hash(prev, seq, guess) for prev in hashes | {bytes(32)})}
    return bool(candidates & hashes)


@pytest.fixture
def node_dpo(client, db) -> FhirClient:
    """The node's own data protection officer (no organization): reads every audit entry."""
    return FhirClient(client, role_token("dpo-node", Role.DPO))


def test_a_hashes_only_proof_of_another_hospitals_patient_confirms_no_guessed_event(
        anchored_of_a, node_dpo, tmp_path):
    target = anchored_of_a[0]
    AuditSalt.objects.filter(entry=target).delete()  # erased: hashes only, even for the DPO
    guess = target.event.encode()  # the attacker's guess is exact

    response = node_dpo.get(proof_url(target.pk))
    binary = node_dpo.get(proof_url(target.pk), HTTP_ACCEPT=MEDIA_TYPE)

    assert response.status_code == 200 and binary.status_code == 200
    proof = response.json()
    assert "salt" not in proof and "event" not in proof["entry"]
    assert proof["version"] == 2 and "entry_hash" in proof["entry"]  # chain hashes shown: salted
    assert not _confirms(guess, target.seq, _hashes_in(proof))
    assert not _confirms(guess, target.seq, _hashes_in(proof_decode(binary.content)))
    # The next entry's prev_hash is this entry's hash: no oracle either.
    assert bytes(AuditEntry.objects.get(seq=target.seq + 1).prev_hash) == bytes(target.entry_hash)
    assert bytes(target.entry_hash) != audit_format.entry_hash(bytes(target.prev_hash), target.seq, guess)
    result = run_verify(tmp_path, binary.content)
    assert result.returncode == 0 and result.stdout.startswith("valid: leaf of entry"), result.stdout
    assert run_verify(tmp_path, response.content).returncode == 0


def _sequence_as_version_1(entries: list[AuditEntry]) -> None:
    """What the sequencer did before hash version 2 (the trigger allows it: seq is still NULL)."""
    last = AuditEntry.objects.filter(seq__isnull=False).order_by("-seq").values_list("seq", "entry_hash").first()
    seq, prev = (last[0], bytes(last[1])) if last else (0, bytes(32))
    with connection.cursor() as cursor:
        for entry in entries:
            seq += 1
            data = entry.event.encode()
            entry_hash = audit_format.entry_hash(prev, seq, data)
            leaf = audit_format.leaf_hash(bytes(AuditSalt.objects.get(entry=entry).salt), seq, data)
            cursor.execute("UPDATE ledger_auditentry SET seq = %s, prev_hash = %s, entry_hash = %s, "
                           "leaf_hash = %s, hash_version = 1 WHERE id = %s", [seq, prev, entry_hash, leaf, entry.pk])
            prev = entry_hash


def test_version_1_entries_still_verify_and_their_unsalted_hashes_never_leave(
        deployed, chain, audit_anchor_artifact, node_dpo, tmp_path):
    old = [audit_append(event={"resourceType": "AuditEvent", "n": n}, patient_id="p1", agent="x", outcome="0")
           for n in range(3)]
    _sequence_as_version_1(old)
    anchor_batch(chain=chain, artifact=audit_anchor_artifact, address=deployed["AuditAnchor"]["address"],
                 first=1, last=3)
    legacy = AuditEntry.objects.select_related("batch").get(seq=2)
    as_old_server = audit_proof(entry=legacy) | {"version": 1}  # what version 1 handed out
    as_old_server["entry"] |= {"prev_hash": "0x" + bytes(legacy.prev_hash).hex(),
                               "entry_hash": "0x" + bytes(legacy.entry_hash).hex()}
    new = [audit_append(event={"resourceType": "AuditEvent", "n": n}, patient_id="p1", agent="x", outcome="0")
           for n in range(3, 6)]
    audit_sequence()
    anchor_batch(chain=chain, artifact=audit_anchor_artifact, address=deployed["AuditAnchor"]["address"],
                 first=4, last=AuditEntry.objects.order_by("-seq").values_list("seq", flat=True).first())

    out = StringIO()
    call_command("ledger_verify", "--rpc", RPC, stdout=out)
    assert out.getvalue().startswith("ok: ")
    shown = {}
    for entry in [*old, *new]:
        proof = node_dpo.get(proof_url(entry.pk)).json()
        shown[entry.pk] = "entry_hash" in proof["entry"]
        assert run_verify(tmp_path, json.dumps(proof).encode()).returncode == 0
        binary = node_dpo.get(proof_url(entry.pk), HTTP_ACCEPT=MEDIA_TYPE).content
        assert run_verify(tmp_path, binary).returncode == 0
    # Version 1 hashes are over the bare event; the first version 2 entry's prev_hash is one.
    assert [shown[e.pk] for e in [*old, *new]] == [False, False, False, False, True, True]
    assert run_verify(tmp_path, json.dumps(as_old_server).encode()).returncode == 0


# --- 2. the token in the header only, scopes, audited ---------------------------------------------

def test_a_token_in_the_url_is_refused_and_the_attempt_audited(anchored_of_a, hospital_a, client):
    token = raw_token(hospital_a.dpo)
    before = last_audit_pk()

    in_url = client.get(proof_url(anchored_of_a[0].pk), {"access_token": token})
    both = client.get(proof_url(anchored_of_a[0].pk), {"access_token": token}, **bearer(token))

    for response in (in_url, both):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "token_in_url" and "entry" not in response.json()
        assert token not in response.content.decode()
    entries = audit_entries_since(before)
    assert [(e.outcome, e.agent) for e in entries] == [("4", "(anonymous)"), ("4", "(anonymous)")]
    assert token not in "".join(e.event for e in entries)


@pytest.mark.parametrize("scope", ["user/Patient.rs", "user/Consent.r", "user/AuditEvent.s"])
def test_a_proof_read_needs_a_scope_that_reads_audit_events(anchored_of_a, client, scope):
    token = role_token("dpo-narrow", Role.DPO, scope=scope)
    before = last_audit_pk()

    response = client.get(proof_url(anchored_of_a[0].pk), **bearer(token))

    assert response.status_code == 403 and "entry" not in response.json()
    assert response.json()["error"]["code"] == "forbidden"
    _only_audit_entry(before, "4")


def test_a_patient_reads_their_own_proof_with_a_patient_scope_and_the_read_is_audited(
        anchored_of_a, client, patient_of_a):
    token = role_token("patient-a", Role.PATIENT, patient=patient_of_a["id"], scope="user/AuditEvent.r")
    target = anchored_of_a[0]
    before = last_audit_pk()

    response = client.get(proof_url(target.pk), **bearer(token))

    assert response.status_code == 200 and response.json()["entry"]["event"] == target.event
    entry = _only_audit_entry(before, "0")
    assert entry.agent == "patient-a" and entry.patient_id == patient_of_a["id"]
    assert {"reference": f"AuditEvent/{target.pk}"} in [e.get("what") for e in json.loads(entry.event)["entity"]]


def test_a_non_staff_session_is_no_substitute_for_a_token(anchored_of_a, client, hospital_a):
    client.force_login(get_user_model().objects.get(username="dpo-a"))

    response = client.get(proof_url(anchored_of_a[0].pk))

    assert response.status_code == 401 and "entry" not in response.json()


# --- 3. bad input is 4xx JSON, never 500 -----------------------------------------------------------

BAD_ENTRY_IDS = ["0", "-1", str(2 ** 70), "9" * 19, "abc", "1.5", "0x10", "１", "²", "1 ", "%00", "1e3"]
BAD_TOKEN_IDS = ["0x" + "ab" * 31, "0x" + "ab" * 33, "0x" + "zz" * 32, "ab" * 32, "-1", str(2 ** 70), "x"]


def test_bad_ids_formats_and_accept_headers_are_4xx_json(anchored_of_a, hospital_a, client):
    dpo = bearer(raw_token(hospital_a.dpo))
    url = proof_url(anchored_of_a[0].pk)
    asked = [(proof_url(i), {}, {}) for i in BAD_ENTRY_IDS] + [(consent_url(i), {}, {}) for i in BAD_TOKEN_IDS]
    asked += [(url, {"format": value}, {}) for value in ["AAA", "", "xml", "bin\x00", "json;x"]]
    asked += [(consent_url("0x" + "ab" * 32), {"format": "bin"}, {}), (url, {"_": "1"}, {})]
    asked += [(url, {}, {"HTTP_ACCEPT": value}) for value in
              ["text/html", "application/xml", "%%%", "image/*", "application/vnd.carrack.audit-proof2"]]
    asked.append((proof_url("0"), {"format": "AAA"}, {}))  # the red team's request
    before = last_audit_pk()

    for path, query, headers in asked:
        response = client.get(path, query, **dpo, **headers)
        assert 400 <= response.status_code < 500, (path, query, headers, response.status_code)
        assert response["Content-Type"].startswith("application/json"), (path, query, headers)
        assert set(response.json()) >= {"error"} and response.json()["error"]["code"]
    assert client.post(url, **dpo).status_code == 405
    assert len(audit_entries_since(before)) == len(asked) + 1


# --- 4. no existence oracle, across patients and hospitals ---------------------------------------

def test_another_patients_entry_answers_as_an_unknown_id(anchored_of_a, hospital_b, client, patient_a_token):
    other = audit_append(event={"resourceType": "AuditEvent"}, patient_id="someone-else", agent="x", outcome="0")
    patient = bearer(patient_a_token)
    unknown = AuditEntry.objects.order_by("-pk").first().pk + 1000
    before = last_audit_pk()

    foreign, missing = client.get(proof_url(other.pk), **patient), client.get(proof_url(unknown), **patient)
    clinician_b = [hospital_b.clinician.get(proof_url(i)) for i in (anchored_of_a[0].pk, unknown)]

    assert (foreign.status_code, foreign.content) == (missing.status_code, missing.content) == \
        (404, b'{"error":{"code":"not_found","message":"no such audit event"}}')
    # A role without access to the log is refused whatever the id: nothing to compare.
    assert [r.status_code for r in clinician_b] == [403, 403] and clinician_b[0].content == clinician_b[1].content
    entries = audit_entries_since(before)
    assert [e.outcome for e in entries] == ["4"] * 4
    assert entries[0].patient_id == "someone-else"  # that patient sees the attempt in their log


@pytest.fixture
def consent_token(patient_of_a, client, patient_a_token, deployed) -> ConsentToken:
    """Patient A's own consent for hospital B to treat them; confirmed on chain."""
    FhirClient(client, patient_a_token).create(consent_body(patient_of_a["id"], grantee=f"Organization/{HOSPITAL_B}"))
    sync()
    token = ConsentToken.objects.get()
    assert token.grant_tx_hash and token.status == ConsentToken.ACTIVE
    return token


def test_consent_proofs_go_to_the_patient_the_two_hospitals_and_the_dpo_only(
        consent_token, hospital_a, hospital_b, client, patient_a_token):
    url, unknown = consent_url(consent_token.token_id), consent_url("0x" + "01" * 32)
    others = {
        "hospital C": bearer(role_token("clin-c", Role.CLINICIAN, organization="hospital-c")),
        "researcher": bearer(role_token("res-a", Role.RESEARCHER, organization=hospital_a.organization_id)),
        "no role": bearer(role_token("nobody", None)),
    }
    admin = get_user_model().objects.create_user("admin-a", is_staff=True)
    before = last_audit_pk()

    allowed = [hospital_a.clinician.get(url), hospital_a.integration.get(url), hospital_b.clinician.get(url),
               hospital_b.dpo.get(url), client.get(url, **bearer(patient_a_token))]
    refused = {who: client.get(url, **auth) for who, auth in others.items()}
    missing = client.get(unknown, **others["hospital C"])
    client.force_login(admin)
    refused["admin session"] = client.get(url)
    client.logout()

    assert [r.status_code for r in allowed] == [200] * 5
    assert all(r.json()["token"]["id"] == consent_token.token_id for r in allowed)
    for who, response in refused.items():
        assert (response.status_code, response.content) == (missing.status_code, missing.content), who
    assert missing.status_code == 404 and "pseudonym" not in missing.content.decode()
    entries = audit_entries_since(before)
    assert [e.outcome for e in entries] == ["0"] * 5 + ["4"] * 5
    assert {e.patient_id for e in entries[:5] + entries[5:8]} == {consent_token.patient_id}
    assert entries[0].event.count(f"Consent/{consent_token.consent_id}/_history/") == 1


def test_a_consent_proof_needs_a_scope_that_reads_consents(consent_token, client, hospital_b):
    token = role_token("clin-b-narrow", Role.CLINICIAN, organization=HOSPITAL_B, scope="user/Patient.rs")
    before = last_audit_pk()

    response = client.get(consent_url(consent_token.token_id), **bearer(token))
    in_url = client.get(consent_url(consent_token.token_id), {"access_token": raw_token(hospital_b.clinician)})

    assert response.status_code == 403 and "terms" not in response.json()
    assert in_url.status_code == 400 and "terms" not in in_url.json()
    assert [e.outcome for e in audit_entries_since(before)] == ["4", "4"]
