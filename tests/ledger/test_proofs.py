"""Proof documents end to end: anchor on the session's anvil, fetch over the API, verify offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from ehr.models import Role
from ledger.models import AuditEntry, AuditSalt
from ledger.services import audit_append, audit_sequence
from ledger.verify import audit_check, audit_proof, merkle
from ledger.verify.errors import ProofInvalid
from ledger.verify.proof_binary import MEDIA_TYPE, proof_decode, proof_encode
from tests.imaging.conftest import role_token
from tests.ledger.conftest import RPC, anchored_entries

pytestmark = [pytest.mark.django_db, pytest.mark.chain]
VERIFY = str(Path(sys.executable).parent / "carrack-verify")


@pytest.fixture
def anchored(deployed, chain, audit_anchor_artifact):
    """Seven audit entries, sequenced, anchored as 1..4 and 5..7."""
    entries = anchored_entries(deployed=deployed, chain=chain, artifact=audit_anchor_artifact, count=7,
                               ranges=[(1, 4), (5, 7)])
    return [AuditEntry.objects.select_related("batch").get(pk=e.pk) for e in entries]


def run_verify(tmp_path: Path, proof: dict | str, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "proof.json"
    path.write_text(proof if isinstance(proof, str) else json.dumps(proof))
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run([VERIFY, "audit-proof", str(path), "--rpc", RPC, *args],
                          capture_output=True, text=True, env=env, timeout=60)


def bearer(client, token: str):
    """The test client with this bearer token in the Authorization header of every request."""
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def staff_client(client):
    """The data protection officer: every entry's proof, with its event and salt."""
    return bearer(client, role_token("dpo", Role.DPO))


@pytest.fixture
def user_client(client):
    """Patient p1, whom every ``anchored`` entry is about."""
    return bearer(client, role_token("patient-p1", Role.PATIENT, patient="p1"))


def proof_url(entry_id) -> str:
    return f"/api/ledger/audit-events/{entry_id}/proof"


# --- round trip ---------------------------------------------------------------------------------

def test_a_staff_proof_carries_the_event_and_salt_and_verifies_offline(anchored, staff_client, tmp_path):
    entry = anchored[5]

    response = staff_client.get(proof_url(entry.pk))

    assert response.status_code == 200
    proof = response.json()
    assert proof["entry"]["seq"] == 6 and proof["entry"]["event"] == entry.event
    assert proof["salt"] == bytes(entry.auditsalt.salt).hex()
    assert proof["merkle"]["leaf_index"] == 1 and proof["merkle"]["tree_size"] == 3
    assert proof["anchor"]["first_seq"] == 5 and proof["anchor"]["transaction"] == entry.batch.tx_hash
    result = run_verify(tmp_path, proof)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("valid: event and leaf of entry seq 6")


def test_a_proof_without_salt_verifies_leaf_to_root(anchored, user_client, tmp_path):
    AuditSalt.objects.filter(entry=anchored[0]).delete()
    proof = user_client.get(proof_url(anchored[0].pk)).json()

    assert "salt" not in proof and "event" not in proof["entry"]
    result = run_verify(tmp_path, proof)
    assert result.returncode == 0 and result.stdout.startswith("valid: leaf of entry seq 1")


def test_after_erasure_even_staff_get_no_event_and_the_leaf_still_verifies(anchored, staff_client, tmp_path):
    AuditSalt.objects.filter(entry=anchored[2]).delete()

    proof = staff_client.get(proof_url(anchored[2].pk)).json()

    assert "salt" not in proof and "event" not in proof["entry"]
    assert run_verify(tmp_path, proof).returncode == 0


def _flip(hex_value: str) -> str:
    digit = hex_value[-1]
    return hex_value[:-1] + ("0" if digit != "0" else "1")


@pytest.mark.parametrize(("change", "reason"), [
    (lambda p: p["merkle"]["path"].__setitem__(0, _flip(p["merkle"]["path"][0])), "does not lead to the stated root"),
    (lambda p: p["entry"].__setitem__("leaf_hash", _flip(p["entry"]["leaf_hash"])), "leaf hash does not match"),
    (lambda p: p.__setitem__("salt", _flip(p["salt"])), "leaf hash does not match"),
    (lambda p: p["entry"].__setitem__("event", p["entry"]["event"].replace('"n":5', '"n":6')), "leaf hash"),
    (lambda p: p["entry"].__setitem__("seq", 5), "leaf hash does not match"),
    (lambda p: p["entry"].__setitem__("entry_hash", _flip(p["entry"]["entry_hash"])), "entry hash does not"),
    (lambda p: p["merkle"].__setitem__("root", _flip(p["merkle"]["root"])), "stated root"),
    (lambda p: p["anchor"].__setitem__("last_seq", 8), "tree size"),
    (lambda p: p["anchor"].__setitem__("block_hash", _flip(p["anchor"]["block_hash"])), "stated block"),
    (lambda p: p["anchor"].__setitem__("contract", "0x" + "12" * 20), "not sent to the contract"),
    (lambda p: p["anchor"].__setitem__("chain_id", 1), "not on chain 1"),
    (lambda p: p["anchor"].__setitem__("member", "0x" + "12" * 20), "no Anchored event"),
    (lambda p: p["anchor"].__setitem__("transaction", "0x" + "ab" * 32), "not on the chain"),
    (lambda p: p.__setitem__("version", 3), "unsupported proof version"),
    (lambda p: p.pop("merkle"), "malformed proof"),
])
def test_a_changed_proof_is_refused_with_its_reason(anchored, staff_client, tmp_path, change, reason):
    proof = staff_client.get(proof_url(anchored[5].pk)).json()
    change(proof)

    result = run_verify(tmp_path, proof)

    assert result.returncode == 1
    assert result.stdout.startswith("invalid: ") and reason in result.stdout


def test_a_root_anchored_by_another_transaction_is_refused(anchored, staff_client):
    proof = staff_client.get(proof_url(anchored[0].pk)).json()
    other = anchored[5].batch
    proof["anchor"].update(transaction=other.tx_hash, block_number=other.block_number,
                           block_hash=other.block_hash)

    ok, reason = audit_check.verify_proof(proof, rpc_url=RPC)

    assert not ok and "no Anchored event" in reason


def test_an_unreachable_node_is_not_a_valid_proof(anchored, staff_client):
    proof = staff_client.get(proof_url(anchored[0].pk)).json()

    ok, reason = audit_check.verify_proof(proof, rpc_url="http://127.0.0.1:9", timeout=2)

    assert not ok and "unreachable" in reason


# --- the CLI's own errors -----------------------------------------------------------------------

def test_not_json_exits_1(tmp_path):
    result = run_verify(tmp_path, "not json")
    assert (result.returncode, result.stdout) == (1, "invalid: the file is not JSON\n")


@pytest.mark.parametrize("argv", [[], ["audit-proof"], ["audit-proof", "/nonexistent.json", "--rpc", RPC],
                                  ["other", "x"]])
def test_usage_errors_exit_2_with_a_message(argv):
    result = subprocess.run([VERIFY, *argv], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "carrack-verify" in result.stderr and result.stdout == ""


# --- the API's errors ---------------------------------------------------------------------------

def test_unknown_or_malformed_ids_are_404_in_the_error_shape(user_client):
    for entry_id in ["999999", "abc", "1" * 30]:
        response = user_client.get(proof_url(entry_id))
        assert response.status_code == 404
        assert response.json() == {"error": {"code": "not_found", "message": "no such audit event"}}


def test_an_entry_not_yet_anchored_is_409_with_what_is_known(user_client):
    entry = audit_append(event={"n": 1}, patient_id="p1", agent="a", outcome="0")

    response = user_client.get(proof_url(entry.pk))
    assert response.status_code == 409
    assert response.json() == {"error": {"code": "not_anchored", "message": "the entry is not anchored yet"},
                               "status": {"id": entry.pk, "seq": None, "anchor": "unsequenced"}}

    audit_sequence()  # the first request's own audit entry is sequenced too
    assert user_client.get(proof_url(entry.pk)).json()["status"] == {
        "id": entry.pk, "seq": 1, "anchor": "pending"}


def test_anonymous_callers_get_the_error_shape_and_no_proof(client):
    entry = audit_append(event={"n": 1}, patient_id=None, agent="a", outcome="0")

    response = client.get(proof_url(entry.pk))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert "entry" not in response.json()


def test_the_proof_is_in_the_openapi_schema(user_client):
    schema = user_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/ledger/audit-events/{id}/proof"]["get"]
    assert set(operation["responses"]) == {"200", "400", "401", "403", "404", "406", "409"}


@pytest.mark.parametrize(("role", "patient_id", "answer"), [
    ("dpo", None, 200),
    ("patient", "p1", 200),
    ("patient", "p2", 404),  # as an unknown id
    ("clinician", None, 403),  # no access to the log, whatever the id
    ("researcher", None, 403),
])
def test_proofs_go_only_to_those_who_may_read_the_entry(anchored, client, role, patient_id, answer):
    bearer(client, role_token(f"who-{role}-{patient_id}", role, patient=patient_id))

    response = client.get(proof_url(anchored[1].pk))

    assert response.status_code == answer
    if answer == 200:
        proof = response.json()
        assert "salt" in proof and "event" in proof["entry"] and proof["merkle"]["root"]
    else:
        assert "entry" not in response.json() and "merkle" not in response.json()


def test_the_user_who_made_the_access_reads_proofs_only_through_a_role(anchored, client):
    bearer(client, role_token("dr-who", None))
    client.force_login(get_user_model().objects.get(username="dr-who"))

    response = client.get(proof_url(anchored[1].pk))

    assert response.status_code == 403 and "salt" not in response.json()


def test_a_non_ascii_digit_id_is_404_in_the_error_shape(user_client):
    response = user_client.get(proof_url("²"))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("change", "reason"), [
    (lambda p: p.pop("salt"), "come together"),
    (lambda p: p["entry"].pop("event"), "come together"),
    (lambda p: p["anchor"].update(member=None), "does not name the member"),
])
def test_half_proofs_are_refused(anchored, staff_client, change, reason):
    proof = staff_client.get(proof_url(anchored[3].pk)).json()
    change(proof)

    ok, why = audit_check.verify_proof(proof, rpc_url=RPC)

    assert not ok and reason in why


def test_a_valid_proof_names_the_contract_and_member_it_was_checked_against(anchored, staff_client):
    proof = staff_client.get(proof_url(anchored[3].pk)).json()

    ok, summary = audit_check.verify_proof(proof, rpc_url=RPC)

    assert ok
    assert proof["anchor"]["contract"] in summary and proof["anchor"]["member"] in summary


# --- the compact binary form ----------------------------------------------------------------

def _verify_file(tmp_path, data: bytes) -> subprocess.CompletedProcess:
    path = tmp_path / "proof.bin"
    path.write_bytes(data)
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run([VERIFY, "audit-proof", str(path), "--rpc", RPC], capture_output=True,
                          text=True, env=env, timeout=60)


@pytest.mark.parametrize("client_fixture", ["staff_client", "user_client"])
def test_binary_proof_round_trips_and_verifies(anchored, request, client_fixture, tmp_path):
    client = request.getfixturevalue(client_fixture)
    url = proof_url(anchored[5].pk)

    as_json = client.get(url).json()
    response = client.get(url, HTTP_ACCEPT=MEDIA_TYPE)

    assert response.status_code == 200 and response["Content-Type"] == MEDIA_TYPE
    decoded = proof_decode(response.content)
    assert decoded["entry"] == {k: (v.lower() if isinstance(v, str) and v.startswith("0x") else v)
                                for k, v in as_json["entry"].items()}
    assert decoded.get("salt") == as_json.get("salt")
    result = _verify_file(tmp_path, response.content)
    assert result.returncode == 0 and result.stdout.startswith("valid:"), result.stdout


def test_a_changed_or_cut_binary_proof_is_refused(anchored, user_client, tmp_path):
    data = user_client.get(proof_url(anchored[1].pk), HTTP_ACCEPT=MEDIA_TYPE).content

    flipped = bytearray(data)
    flipped[30] ^= 1  # inside the leaf hash
    assert _verify_file(tmp_path, bytes(flipped)).returncode == 1
    result = _verify_file(tmp_path, data[:-5])
    assert result.returncode == 1 and "truncated" in result.stdout
    with pytest.raises(ProofInvalid, match="trailing"):
        proof_decode(data + b"x")


def test_hashes_only_proof_at_a_million_entries_is_under_1_kb():
    leaves = [bytes([n % 251]) * 32 for n in range(2)]  # the path length is what matters
    size = 1_000_000
    path = [bytes(32)] * 20  # ceil(log2(10⁶)) = 20 levels
    proof = audit_proof.proof_document(
        entry_id=123_456_789, seq=999_999, event=None, salt=None, prev_hash=bytes(32),
        entry_hash=bytes(32), leaves=leaves, first_seq=999_999,
        anchor={"first_seq": 1, "last_seq": size, "chain_id": 31337, "contract": "0x" + "11" * 20,
                "member": "0x" + "22" * 20, "transaction": "0x" + "33" * 32, "block_number": 10,
                "block_hash": "0x" + "44" * 32})
    proof["merkle"].update(leaf_index=999_998, tree_size=size, path=["0x" + p.hex() for p in path],
                           root="0x" + merkle.root(leaves).hex())

    encoded = proof_encode(proof)

    assert len(encoded) <= 1024
    assert proof_decode(encoded)["merkle"] == proof["merkle"]
