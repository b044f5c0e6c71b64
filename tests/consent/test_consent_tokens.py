"""Consent tokens end to end: FHIR Consent → token on chain (real anvil) → enforced at every read.

Hospital A holds patient P; clinicians of hospital B may read P only while P's consent for
B and purpose TREAT is confirmed on chain, not revoked, not expired and not denied.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from config.stack.services import BASE_DIR
from ehr.models import Resource, Role
from ledger.chain import consent_client
from ledger.consents.check import consent_check
from ledger.consents.reconcile import consent_reconcile
from ledger.consents.sync import artifact, consent_sync
from ledger.models import AuditEntry, ConsentChainTx, ConsentToken
from ledger.verify import consent_format as fmt
from tests.access.test_policy import make_client
from tests.ehr.conftest import observation, patient

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

A, B, C = "hosp-a", "hosp-b", "hosp-c"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def consent_body(patient_id: str, *, grantee: str = f"Organization/{B}", purpose: str = "TREAT",
                 kind: str = "permit", status: str = "active", period: dict | None = None,
                 nested: list | None = None) -> dict:
    provision = {"type": kind, "actor": [{"role": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
        "reference": {"reference": grantee}}], "purpose": [{"system": V3, "code": purpose}]}
    if period:
        provision["period"] = period
    if nested:
        provision["provision"] = nested
    return {
        "resourceType": "Consent", "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": "2026-11-01T10:00:00Z",
        "policy": [{"uri": "https://carrack.example/policy/treatment-sharing"}],
        "provision": provision,
    }


@pytest.fixture
def world(client, deployed):
    clinician_a = make_client(client, "clin-a", Role.CLINICIAN, organization_id=A)
    record = clinician_a.create(patient("Zebediah", "Quill", "1961-07-19",
                                        managingOrganization={"reference": f"Organization/{A}"},
                                        identifier=[{"system": "urn:mrn", "value": "MRN-778899"}]))
    obs = clinician_a.create(observation(f"Patient/{record['id']}"))
    return {
        "patient": record["id"], "observation": obs["id"], "clinician_a": clinician_a,
        "clinician_b": make_client(client, "clin-b", Role.CLINICIAN, scope="user/*.rs", organization_id=B),
        "clinician_c": make_client(client, "clin-c", Role.CLINICIAN, scope="user/*.rs", organization_id=C),
        "patient_user": make_client(client, "pat", Role.PATIENT, scope="patient/*.rs patient/Consent.cud",
                                    patient_id=record["id"]),
        "dpo": make_client(client, "dpo", Role.DPO, scope="user/Consent.cruds"),
    }


def sync() -> dict:
    report = consent_sync(client=consent_client())
    assert report.unavailable is None and not report.failed, report
    return report.as_dict()


def grant(world, **options) -> dict:
    created = world["patient_user"].create(consent_body(world["patient"], **options))
    return created


def read_as_b(world):
    return world["clinician_b"].get(f"/fhir/Patient/{world['patient']}")


# --- grant ------------------------------------------------------------------------------------

def test_grant_counts_only_once_confirmed_then_token_is_on_chain_with_its_fields(world):
    grant(world)
    token = ConsentToken.objects.get()
    assert token.status == "pending"
    assert read_as_b(world).status_code == 404  # not on chain yet

    sync()

    token.refresh_from_db()
    assert token.status == "active" and token.grant_block is not None
    client = consent_client()
    issuer, valid_from, valid_until, status = client.call(artifact(), token.contract, "tokenState",
                                                          int(token.token_id, 16))
    assert (issuer, status) == (client.address, fmt.ACTIVE)
    assert (valid_from, valid_until) == (0, 0)
    terms = fmt.terms(pseudonym=fmt.pseudonym(b"dev-only-consent-pseudonym-key", world["patient"]),
                      grantee=fmt.grantee_hash(f"Organization/{B}"), purpose=fmt.purpose_bytes("TREAT"),
                      consent_hash=bytes(token.consent_hash), serial=0)
    assert token.token_id == fmt.token_id(chain_id=client.chain_id(), contract=token.contract,
                                          issuer=client.address, terms=terms, valid_from=0, valid_until=0)
    response = read_as_b(world)
    assert response.status_code == 200
    assert _last_audit_policies() == [f"urn:carrack:consent-token:{token.token_id}"]


def test_no_personal_data_in_consent_transactions_or_events(world):
    grant(world)
    sync()
    world["patient_user"].put(f"/fhir/Consent/{ConsentToken.objects.get().consent_id}",
                              {**consent_body(world["patient"], status="inactive"),
                               "id": ConsentToken.objects.get().consent_id})
    sync()
    secrets = [world["patient"], "Zebediah", "Quill", "1961-07-19", "19610719", "MRN-778899", B, "TREAT"]
    w3 = consent_client()._w3
    for tx in ConsentChainTx.objects.filter(status="mined"):
        raw = w3.eth.get_transaction(tx.tx_hash)["input"]
        logs = w3.eth.get_transaction_receipt(tx.tx_hash)["logs"]
        blob = bytes(raw) + b"".join(bytes(log["data"]) + b"".join(log["topics"]) for log in logs)
        for secret in secrets:
            assert secret.encode() not in blob and secret.encode().hex().encode() not in blob.hex().encode()
    assert ConsentChainTx.objects.filter(status="mined").count() == 2


# --- revoke, expiry, deny, purpose ----------------------------------------------------------

def test_revocation_denies_at_once_before_mining_then_reaches_chain(world):
    consent = grant(world)
    sync()
    assert read_as_b(world).status_code == 200
    token = ConsentToken.objects.get()

    revoked = world["patient_user"].put(f"/fhir/Consent/{consent['id']}",
                                        {**consent_body(world["patient"], status="inactive"), "id": consent["id"]})

    assert revoked.status_code == 200
    assert read_as_b(world).status_code == 404  # same second, nothing mined
    client = consent_client()
    assert client.call(artifact(), token.contract, "isActive", int(token.token_id, 16)) is True
    sync()
    assert client.call(artifact(), token.contract, "isActive", int(token.token_id, 16)) is False
    token.refresh_from_db()
    assert token.status == "revoked" and token.revoke_block is not None


def test_deleting_the_consent_revokes_its_tokens(world):
    consent = grant(world)
    sync()

    assert world["patient_user"].delete(f"/fhir/Consent/{consent['id']}").status_code == 204

    assert read_as_b(world).status_code == 404
    assert ConsentToken.objects.get().status == "revoked"


def test_expired_token_never_passes(world):
    grant(world, period={"start": "2020-01-01", "end": "2021-12-31"})
    sync()

    assert ConsentToken.objects.get().status == "active"
    assert read_as_b(world).status_code == 404
    token = ConsentToken.objects.get()
    assert consent_check(patient_id=world["patient"], grantee=f"Organization/{B}", purpose="TREAT",
                         at=token.valid_until - timedelta(days=1)) == token.token_id
    assert active_on_chain(token) is False


def active_on_chain(token: ConsentToken) -> bool:
    return consent_client().call(artifact(), token.contract, "isActive", int(token.token_id, 16))


def test_deny_overrides_permit_across_consents(world):
    grant(world)
    sync()
    assert read_as_b(world).status_code == 200

    deny = world["dpo"].create(consent_body(world["patient"], kind="deny"))

    assert read_as_b(world).status_code == 404
    assert ConsentToken.objects.get().status == "revoked"  # fully covered: revoked, not just hidden
    world["dpo"].delete(f"/fhir/Consent/{deny['id']}")
    sync()
    assert read_as_b(world).status_code == 200  # a fresh token (serial 1) for the same permit
    assert sorted(ConsentToken.objects.values_list("serial", "status")) == [(0, "revoked"), (1, "active")]


def test_nested_deny_for_a_period_overrides_only_then(world):
    now = timezone.now()
    grant(world, nested=[{"type": "deny", "period": {"start": (now - timedelta(hours=1)).isoformat(),
                                                      "end": (now + timedelta(hours=1)).isoformat()}}])
    sync()

    assert ConsentToken.objects.get().status == "active"
    assert read_as_b(world).status_code == 404
    assert consent_check(patient_id=world["patient"], grantee=f"Organization/{B}", purpose="TREAT",
                         at=now + timedelta(hours=2)) is not None


def test_consent_for_one_purpose_does_not_open_another(world):
    grant(world, purpose="HRESCH")
    sync()

    assert read_as_b(world).status_code == 404
    assert consent_check(patient_id=world["patient"], grantee=f"Organization/{B}", purpose="HRESCH")
    assert consent_check(patient_id=world["patient"], grantee=f"Organization/{B}", purpose="TREAT") is None


def test_consent_for_one_hospital_does_not_open_another(world):
    grant(world)
    sync()

    assert world["clinician_c"].get(f"/fhir/Patient/{world['patient']}").status_code == 404
    searched = world["clinician_c"].get(f"/fhir/Observation?patient={world['patient']}").json()
    assert searched["total"] == 0


def test_search_and_everything_show_consented_patients_and_audit_the_token(world):
    path = f"/fhir/Observation?patient={world['patient']}"
    assert world["clinician_b"].get(path).json()["total"] == 0
    grant(world)
    sync()

    assert world["clinician_b"].get(path).json()["total"] == 1
    token = ConsentToken.objects.get().token_id
    assert _last_audit_policies() == [f"urn:carrack:consent-token:{token}"]
    everything = world["clinician_b"].get(f"/fhir/Patient/{world['patient']}/$everything").json()
    assert {entry["resource"]["resourceType"] for entry in everything["entry"]} >= {"Patient", "Observation"}
    assert world["clinician_b"].put(f"/fhir/Observation/{world['observation']}",
                                    {**observation(f"Patient/{world['patient']}"),
                                     "id": world["observation"]}).status_code == 403  # reads only


# --- who may write Consents ----------------------------------------------------------------

def test_consent_writers_by_role(world, client):
    body = consent_body(world["patient"])
    signed = {**body, "performer": [{"reference": f"Patient/{world['patient']}"}],
              "sourceAttachment": {"contentType": "application/pdf", "url": "https://forms.example/signed/1"}}
    assert world["patient_user"].post("/fhir/Consent", body).status_code == 201
    assert world["dpo"].post("/fhir/Consent", body).status_code == 403  # never grants for the patient
    assert world["dpo"].post("/fhir/Consent", consent_body(world["patient"], kind="deny")).status_code == 201
    assert world["clinician_a"].post("/fhir/Consent", body).status_code == 422  # no signed form
    assert world["clinician_a"].post("/fhir/Consent", signed).status_code == 201
    other = world["clinician_a"].create(patient("Other"))
    assert world["patient_user"].post("/fhir/Consent", consent_body(other["id"])).status_code == 422
    clinician_b = make_client(client, "clin-b-writer", Role.CLINICIAN, organization_id=B)
    assert clinician_b.post("/fhir/Consent", body).status_code == 422  # as for an unknown patient
    researcher = make_client(client, "researcher", Role.RESEARCHER)
    assert researcher.post("/fhir/Consent", body).status_code == 403
    assert Resource.objects.filter(resource_type="Consent").count() == 3
    assert world["dpo"].get("/fhir/Consent").json()["total"] == 3
    assert world["dpo"].get(f"/fhir/Patient/{world['patient']}").status_code == 403  # not the chart


def test_unenforceable_permit_is_refused_and_writes_nothing(world):
    body = consent_body(world["patient"])
    body["provision"]["class"] = [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]

    response = world["patient_user"].post("/fhir/Consent", body)

    assert response.status_code == 422
    assert "limited to some data" in response.json()["issue"][0]["diagnostics"]
    assert not Resource.objects.filter(resource_type="Consent").exists()
    assert not ConsentToken.objects.exists()


# --- chain down, reconciliation, proofs ----------------------------------------------------

def test_chain_down_grants_stay_pending_revocations_deny_and_both_reach_chain(world, anvil_node, settings):
    settings.CHAIN_RPC_URL = anvil_node.url
    call_command("chain_deploy", stdout=open("/dev/null", "w"))  # noqa: SIM115
    first = grant(world)
    sync()
    assert read_as_b(world).status_code == 200
    anvil_node.stop()

    world["patient_user"].put(f"/fhir/Consent/{first['id']}",
                              {**consent_body(world["patient"], status="inactive"), "id": first["id"]})
    grant(world, grantee=f"Organization/{C}")
    report = consent_sync(client=consent_client())

    assert report.unavailable
    assert read_as_b(world).status_code == 404
    assert world["clinician_c"].get(f"/fhir/Patient/{world['patient']}").status_code == 404
    anvil_node.start()
    sync()
    old, new = ConsentToken.objects.order_by("pk")
    assert (old.status, new.status) == ("revoked", "active")
    assert active_on_chain(old) is False and active_on_chain(new) is True
    assert world["clinician_c"].get(f"/fhir/Patient/{world['patient']}").status_code == 200
    assert consent_reconcile(client=consent_client()) == []


def test_reconciliation_reports_a_tampered_mirror(world):
    first = grant(world)
    sync()
    world["patient_user"].put(f"/fhir/Consent/{first['id']}",
                              {**consent_body(world["patient"], status="inactive"), "id": first["id"]})
    grant(world, grantee=f"Organization/{C}")
    sync()
    assert consent_reconcile(client=consent_client()) == []
    revoked, active = ConsentToken.objects.order_by("pk")

    with connection.cursor() as cursor:
        cursor.execute("UPDATE ledger_consenttoken SET status = 'active' WHERE id = %s", [revoked.pk])
        cursor.execute("UPDATE ledger_consenttoken SET grantee = 'Organization/evil' WHERE id = %s", [active.pk])

    problems = {d.token: d.problem for d in consent_reconcile(client=consent_client())}
    assert "mirror says active, chain says revoked" in problems[revoked.token_id]
    assert "do not hash to the token id" in problems[active.token_id]
    with pytest.raises(CommandError, match="divergence"):
        call_command("consent_reconcile", stdout=open("/dev/null", "w"))  # noqa: SIM115


def test_reconciliation_reports_a_token_missing_from_the_mirror(world):
    grant(world)
    sync()
    token = ConsentToken.objects.get()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM ledger_consentchaintx WHERE token_id = %s", [token.pk])
        cursor.execute("DELETE FROM ledger_consenttoken WHERE id = %s", [token.pk])

    problems = consent_reconcile(client=consent_client())

    assert [d.token for d in problems] == [token.token_id]
    assert "unknown to the mirror" in problems[0].problem


def test_proof_api_and_offline_verifier(world, client, tmp_path):
    consent = grant(world)
    sync()
    token = ConsentToken.objects.get()
    url = f"/api/ledger/consents/{token.token_id}/proof"

    proof = client.get(url, **world["patient_user"].auth).json()

    assert proof["token"]["id"] == token.token_id and proof["on_chain"]["status"] == "active"
    assert proof["consent"]["reference"] == f"Consent/{consent['id']}/_history/1"
    assert client.get(url, **world["clinician_b"].auth).status_code == 200  # the grantee
    assert client.get(url, **world["clinician_c"].auth).status_code == 404  # neither side
    granted_at = proof["grant"]["block_number"]
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof))
    assert _verify(path, "--purpose", "TREAT", "--grantee", f"Organization/{B}") == (0, "valid")
    assert _verify(path, "--block", str(granted_at - 1))[0] == 1
    assert _verify(path, "--purpose", "HRESCH")[0] == 1

    world["patient_user"].put(f"/fhir/Consent/{consent['id']}",
                              {**consent_body(world["patient"], status="inactive"), "id": consent["id"]})
    sync()
    code, reason = _verify(path)
    assert code == 1 and "revoked" in reason
    assert _verify(path, "--block", str(granted_at)) == (0, "valid")
    forged = {**proof, "terms": {**proof["terms"], "grantee": f"Organization/{C}"}}
    path.write_text(json.dumps(forged))
    assert _verify(path, "--block", str(granted_at))[0] == 1


def _verify(path, *extra) -> tuple[int, str]:
    from django.conf import settings

    result = subprocess.run(
        [sys.executable, "-m", "ledger.verify.cli", "consent", str(path), "--rpc", settings.CHAIN_RPC_URL, *extra],
        cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
    )
    return result.returncode, result.stdout.split(":")[0] if result.returncode == 0 else result.stdout


def _last_audit_policies() -> list[str]:
    event = json.loads(AuditEntry.objects.order_by("-pk").first().event)
    return event["agent"][0].get("policy", [])
