"""Required bindings: a code outside its value set is refused (422, code-invalid, the element's path)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ehr import bindings
from ehr.models import Resource
from tests.ehr.conftest import observation, patient

pytestmark = pytest.mark.django_db
DEFINITIONS = Path(bindings.__file__).parent / "definitions"


def problems(response) -> list[tuple[str, list[str]]]:
    return [(i["code"], i.get("expression", [])) for i in response.json()["issue"] if i["severity"] == "error"]


def test_a_patient_of_gender_robot_is_refused_naming_patient_gender(fhir):
    response = fhir.post("/fhir/Patient", patient(gender="robot"))

    assert response.status_code == 422
    assert problems(response) == [("code-invalid", ["Patient.gender"])]
    assert "robot" not in response.content.decode()  # the value is never echoed (it may be anything)
    assert not Resource.objects.filter(resource_type="Patient").exists()


def test_an_observation_with_status_not_a_status_is_refused(fhir):
    owner = fhir.create(patient())

    response = fhir.post("/fhir/Observation", observation(f"Patient/{owner['id']}", status="not-a-status"))

    assert response.status_code == 422
    assert problems(response) == [("code-invalid", ["Observation.status"])]
    assert not Resource.objects.filter(resource_type="Observation").exists()


def test_update_and_patch_are_checked_too(fhir):
    created = fhir.create(patient(gender="female"))
    path = f"/fhir/Patient/{created['id']}"

    put = fhir.put(path, {**created, "gender": "robot"})
    patched = fhir.patch(path, [{"op": "replace", "path": "/gender", "value": "robot"}])

    assert (put.status_code, patched.status_code) == (422, 422)
    assert problems(put) == problems(patched) == [("code-invalid", ["Patient.gender"])]
    assert fhir.get(path).json()["gender"] == "female"


def test_nested_and_datatype_elements_are_checked_with_their_index(fhir):
    owner = fhir.create(patient())
    obs = observation(f"Patient/{owner['id']}", component=[
        {"code": {"text": "a"}, "valueQuantity": {"value": 1, "comparator": "<"}},
        {"code": {"text": "b"}, "valueQuantity": {"value": 1, "comparator": "about"}},
    ])

    response = fhir.post("/fhir/Observation", obs)

    assert problems(response) == [("code-invalid", ["Observation.component[1].valueQuantity.comparator"])]


def test_a_transaction_with_a_bad_code_commits_nothing_and_names_the_entry(fhir):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6c3a2e4e-5b7b-4a43-9c1b-0d7f0a2b9a11", "resource": patient(),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": observation("urn:uuid:6c3a2e4e-5b7b-4a43-9c1b-0d7f0a2b9a11", status="not-a-status"),
         "request": {"method": "POST", "url": "Observation"}},
    ]}

    response = fhir.post("/fhir", bundle)

    assert response.status_code == 422
    assert problems(response) == [("code-invalid", ["Bundle.entry[1].resource.status"])]
    assert not Resource.objects.exists()


def test_a_transaction_put_entry_names_the_entry_too(fhir):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**patient(gender="robot"), "id": "p1"}, "request": {"method": "PUT", "url": "Patient/p1"}},
    ]}

    response = fhir.post("/fhir", bundle)

    assert problems(response) == [("code-invalid", ["Bundle.entry[0].resource.gender"])]
    assert not Resource.objects.exists()


def test_valid_codes_pass_and_are_stored_as_sent(fhir):
    owner = fhir.post("/fhir/Patient", patient(gender="unknown", name=[{"use": "official", "family": "Doe"}]))
    sent = observation(f"Patient/{owner.json()['id']}", status="amended")

    response = fhir.post("/fhir/Observation", json.dumps(sent, indent=3))

    assert (owner.status_code, response.status_code) == (201, 201)
    stored = Resource.objects.get(resource_type="Observation").text
    assert '"amended"' in stored and '\n      "value": 72,' in stored  # the client's own text, layout kept


def test_an_extensible_or_preferred_binding_takes_any_code(fhir):
    owner = fhir.create(patient(maritalStatus={"coding": [{"system": "http://example.org/local", "code": "x"}]}))

    response = fhir.post("/fhir/Observation", observation(
        f"Patient/{owner['id']}",
        category=[{"coding": [{"system": "http://example.org/local", "code": "not-in-the-set"}]}],
        interpretation=[{"coding": [{"system": "http://example.org/local", "code": "zz"}]}]))

    assert response.status_code == 201


CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def condition(patient_id: str, *codings: dict) -> dict:
    return {"resourceType": "Condition", "subject": {"reference": f"Patient/{patient_id}"},
            "code": {"text": "asthma"}, "clinicalStatus": {"coding": list(codings)}}


def test_a_required_codeable_concept_is_refused_for_a_wrong_code_of_its_own_system(fhir):
    owner = fhir.create(patient())

    response = fhir.post("/fhir/Condition", condition(owner["id"], {"system": CLINICAL, "code": "cured"}))

    assert response.status_code == 422
    assert problems(response) == [("code-invalid", ["Condition.clinicalStatus.coding[0]"])]


def test_strict_handling_refuses_a_required_concept_with_no_coding_of_its_value_set(fhir):
    """Lenient: a local coding of a required CodeableConcept passes; strict: it is refused."""
    owner = fhir.create(patient())
    local = condition(owner["id"], {"system": "http://example.org/local", "code": "on"})

    strict = fhir.post("/fhir/Condition", local, HTTP_PREFER="handling=strict")
    lenient = fhir.post("/fhir/Condition", local)

    assert strict.status_code == 422
    assert problems(strict) == [("code-invalid", ["Condition.clinicalStatus"])]
    assert lenient.status_code == 201
    assert Resource.objects.filter(resource_type="Condition").count() == 1


def test_strict_handling_takes_a_coding_of_the_set_with_local_translations(fhir):
    owner = fhir.create(patient())
    translated = condition(owner["id"], {"system": "http://example.org/local", "code": "on"},
                           {"system": CLINICAL, "code": "active"})

    response = fhir.post("/fhir/Condition", translated, HTTP_PREFER="handling=strict")

    assert response.status_code == 201


def test_strict_handling_does_not_outlive_its_request(fhir):
    owner = fhir.create(patient())
    fhir.post("/fhir/Patient", patient(), HTTP_PREFER="handling=strict")

    assert bindings.check(condition(owner["id"], {"system": "http://example.org/local", "code": "on"})) == []


def test_the_setting_turns_the_check_off(settings):
    settings.FHIR_VALIDATE_BINDINGS = False
    assert bindings.check({"resourceType": "Patient", "gender": "robot"}) == []
    settings.FHIR_VALIDATE_BINDINGS = True
    assert bindings.check({"resourceType": "Patient", "gender": "robot"})


def test_the_vendored_bindings_match_the_readme_checksum():
    data = (DEFINITIONS / "required-bindings-r4.json").read_bytes()
    readme = (DEFINITIONS / "README.md").read_text(encoding="utf-8")
    assert hashlib.sha256(data).hexdigest() in readme
    document = json.loads(data)
    assert document["bindings"]["Patient.gender"]["codes"] == {
        "http://hl7.org/fhir/administrative-gender": ["female", "male", "other", "unknown"]}
    assert "Attachment.contentType" in document["unexpanded"]


def test_only_an_expression_that_starts_with_the_resource_type_is_moved_into_the_entry():
    issues = [{"expression": ["Observation.status"]}, {"expression": ["birthDate"]}, {"code": "x"}]

    assert bindings.issues_in_entry(issues, 2) == [{"expression": ["Bundle.entry[2].resource.status"]},
                                                   {"expression": ["birthDate"]}, {"code": "x"}]
