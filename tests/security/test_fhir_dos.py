"""Issue 11, findings 2 and 3: cheap denial of service, and inputs that answered 500.

Bundles have an entry cap (FHIR_BUNDLE_MAX_ENTRIES), searches a criteria and a chain cap
(FHIR_SEARCH_MAX_PARAMS, FHIR_SEARCH_MAX_CHAINS), assembled Bundles a size cap
(FHIR_MAX_RESPONSE_BYTES), each checked before the expensive work. Numbers beyond the index
columns, NUL characters, edge dates, long texts and conditional updates naming an id are
answered 4xx (or stored), never 500, and a refusal writes nothing.
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from ehr import fhirjson
from ehr.models import QuantityIndex, Resource, ResourceVersion
from ehr.numeric import INDEX_MAX
from tests.ehr.conftest import patient

from .conftest import resource_count


def outcome_code(response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]["code"]


def bundle(kind: str, entries: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def get_entry(url: str) -> dict:
    return {"request": {"method": "GET", "url": url}}


def create_entry(resource: dict) -> dict:
    return {"request": {"method": "POST", "url": resource["resourceType"]}, "resource": resource}


# ---------------------------------------------------------------------------------------------
# Finding 2: caps


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_a_bundle_over_the_entry_cap_is_413_and_writes_nothing(hospital_a, settings, kind):
    settings.FHIR_BUNDLE_MAX_ENTRIES = 5
    before = resource_count()

    response = hospital_a.integration.post("/fhir", bundle(kind, [create_entry(patient()) for _ in range(6)]))

    assert response.status_code == 413
    assert outcome_code(response) == "too-costly"
    assert resource_count() == before


def test_a_bundle_at_the_entry_cap_is_processed(hospital_a, settings):
    settings.FHIR_BUNDLE_MAX_ENTRIES = 5

    response = hospital_a.integration.post("/fhir", bundle("transaction", [create_entry(patient()) for _ in range(5)]))

    assert response.status_code == 200, response.content[:300]


def test_a_batch_of_metadata_reads_stops_at_the_response_budget(hospital_a, settings):
    """50 GET metadata made 16 MB; entries past the budget now fail unrun (413 each)."""
    size = len(hospital_a.integration.get("/fhir/metadata").content)
    settings.FHIR_MAX_RESPONSE_BYTES = int(size * 2.5)

    response = hospital_a.integration.post("/fhir", bundle("batch", [get_entry("metadata")] * 50))

    assert response.status_code == 200
    statuses = [entry["response"]["status"] for entry in response.json()["entry"]]
    assert statuses[:2] == ["200", "200"]
    assert all(status.startswith("413") for status in statuses[2:]), statuses
    assert len(response.content) < settings.FHIR_MAX_RESPONSE_BYTES


def test_the_red_teams_batch_of_50_metadata_reads_is_cut_under_the_default_budget(hospital_a, settings):
    response = hospital_a.integration.post("/fhir", bundle("batch", [get_entry("metadata")] * 50))

    assert response.status_code == 200
    statuses = [entry["response"]["status"] for entry in response.json()["entry"]]
    assert statuses[0] == "200" and statuses[-1].startswith("413")
    assert len(response.content) <= settings.FHIR_MAX_RESPONSE_BYTES <= 8 * 1024 * 1024


def test_a_transaction_answer_over_the_budget_is_413_and_writes_nothing(hospital_a, settings):
    settings.FHIR_MAX_RESPONSE_BYTES = 3_000
    before = resource_count()

    response = hospital_a.integration.post("/fhir", bundle("transaction", [create_entry(patient()) for _ in range(30)]),
                                           HTTP_PREFER="return=representation")

    assert response.status_code == 413
    assert outcome_code(response) == "too-costly"
    assert resource_count() == before


def test_a_searchset_over_the_budget_is_413(hospital_a, patient_of_a, settings):
    for index in range(3):
        hospital_a.integration.create(patient(family=f"Budget{index}"))
    settings.FHIR_MAX_RESPONSE_BYTES = 1_000

    response = hospital_a.integration.get("/fhir/Patient?family=Budget")

    assert response.status_code == 413
    assert outcome_code(response) == "too-costly"


def test_a_search_with_more_criteria_than_the_cap_is_refused(hospital_a, patient_of_a, settings):
    query = "&".join(f"family=A{index}" for index in range(settings.FHIR_SEARCH_MAX_PARAMS + 1))

    response = hospital_a.integration.get(f"/fhir/Patient?{query}")

    assert response.status_code == 400
    assert outcome_code(response) == "too-costly"


def test_eighty_chained_criteria_are_refused_at_once(hospital_a, patient_of_a):
    """80 chains took 5.5 s; the 9th is refused before any SQL."""
    query = "&".join(f"subject.name=x{index}" for index in range(80))
    started = time.perf_counter()

    response = hospital_a.integration.get(f"/fhir/Observation?{query}")

    assert response.status_code == 400
    assert outcome_code(response) == "too-costly"
    assert time.perf_counter() - started < 2


def test_chains_within_the_cap_still_work(hospital_a, patient_of_a, settings):
    query = "&".join(["subject:Patient.family=Alpha"] * settings.FHIR_SEARCH_MAX_CHAINS)

    response = hospital_a.integration.get(f"/fhir/Observation?{query}")

    assert response.status_code == 200
    assert response.json()["total"] == 1


def test_the_criteria_cap_holds_for_post_search_and_conditional_criteria(hospital_a, patient_of_a, settings):
    query = "&".join(f"family=A{index}" for index in range(settings.FHIR_SEARCH_MAX_PARAMS + 1))
    before = resource_count()

    searched = hospital_a.integration.post("/fhir/Patient/_search", query,
                                           content_type="application/x-www-form-urlencoded")
    created = hospital_a.integration.post("/fhir/Patient", patient(), HTTP_IF_NONE_EXIST=query)

    assert (searched.status_code, created.status_code) == (400, 400)
    assert outcome_code(searched) == outcome_code(created) == "too-costly"
    assert resource_count() == before


# ---------------------------------------------------------------------------------------------
# Finding 3: what answered 500


def observation(patient_id: str, value: str) -> str:
    return ('{"resourceType":"Observation","status":"final","code":{"text":"huge"},'
            f'"subject":{{"reference":"Patient/{patient_id}"}},"valueQuantity":{{"value":{value}}}}}')


@pytest.mark.parametrize("value", ["1e999999", "-1e999999", "1e-999999", "9" * 5000, "0." + "3" * 5000])
def test_decimals_beyond_the_index_range_are_stored_verbatim(hospital_a, patient_of_a, value):
    response = hospital_a.integration.post("/fhir/Observation", observation(patient_of_a["id"], value))

    assert response.status_code == 201, response.content[:300]
    row = Resource.objects.get(logical_id=fhirjson.loads(response.content.decode())["id"])
    assert f'"value":{value}}}' in row.text
    indexed = QuantityIndex.objects.get(resource=row, param="value-quantity").value
    assert -INDEX_MAX <= indexed <= INDEX_MAX  # numeric without typmod (ehr.numeric); was abs() <= 1e26


def test_a_huge_decimal_is_found_by_range(hospital_a, patient_of_a):
    created = hospital_a.integration.post("/fhir/Observation", observation(patient_of_a["id"], "1e999999"))

    found = hospital_a.integration.get("/fhir/Observation?value-quantity=gt1e25")

    assert [e["resource"]["id"] for e in found.json()["entry"]] == [created.json()["id"]]


@pytest.mark.parametrize("value", ["1e1000000", "1e-1000000", "1E+100000000000000000000"])
def test_absurd_exponents_are_400_and_write_nothing(hospital_a, patient_of_a, value):
    before = resource_count()

    response = hospital_a.integration.post("/fhir/Observation", observation(patient_of_a["id"], value))

    assert response.status_code == 400
    assert outcome_code(response) == "structure"
    assert resource_count() == before


@pytest.mark.parametrize("body, expression", [
    ({"name": [{"family": "a\u0000b"}]}, "name[0].family"),
    ({"identifier": [{"system": "urn:x", "value": "\u0000"}]}, "identifier[0].value"),
])
def test_nul_in_a_written_string_is_400_naming_the_element(hospital_a, body, expression):
    before = resource_count()

    response = hospital_a.integration.post("/fhir/Patient", {**patient(), **body})

    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == [expression]
    assert "a\u0000b" not in response.content.decode()
    assert resource_count() == before


def test_nul_through_patch_and_bundle_is_400(hospital_a, patient_of_a):
    versions = ResourceVersion.objects.count()

    patched = hospital_a.integration.patch(f"/fhir/Patient/{patient_of_a['id']}",
                                           [{"op": "add", "path": "/gender", "value": "fe\u0000male"}])
    posted = hospital_a.integration.post("/fhir", bundle("transaction", [
        create_entry({**patient(), "name": [{"family": "\u0000"}]})]))

    assert (patched.status_code, posted.status_code) == (400, 400)
    assert ResourceVersion.objects.count() == versions


@pytest.mark.parametrize("query", [
    "birthdate=ap0001", "birthdate=ap9999", "birthdate=ap0001-01-01T00:00:00Z", "birthdate=gt9999-12-31",
    "birthdate=lt0001", "birthdate=sa9999", "birthdate=eb0001", "birthdate=ne0001", "_lastUpdated=ap0001",
    "birthdate=ap9999-12-31T23:59:59.999999Z",
])
def test_edge_dates_answer_a_bundle(hospital_a, patient_of_a, query):
    response = hospital_a.integration.get(f"/fhir/Patient?{query}")

    assert response.status_code == 200, response.content[:300]
    assert response.json()["resourceType"] == "Bundle"


@pytest.mark.parametrize("query", ["birthdate=ap0000", "birthdate=0001-01-01T00:00:00+14:00",
                                   "birthdate=ap10000", "birthdate=9999-12-31T23:59:00-14:00"])
def test_dates_outside_the_calendar_are_400(hospital_a, query):
    response = hospital_a.integration.get(f"/fhir/Patient?{query}")

    assert response.status_code == 400
    assert outcome_code(response) == "invalid"


def test_conditional_update_with_a_different_body_id_is_400(hospital_a, patient_of_a):
    other = hospital_a.integration.create(patient(family="Other"))
    versions = ResourceVersion.objects.count()

    response = hospital_a.integration.put(f"/fhir/Patient?_id={patient_of_a['id']}",
                                          {**patient(), "id": other["id"]})

    assert response.status_code == 400
    assert outcome_code(response) == "invalid"
    assert ResourceVersion.objects.count() == versions


def test_conditional_update_reveals_nothing_about_hidden_ids(hospital_a, hospital_b, patient_of_a):
    """B's criteria cannot match A's patient; naming A's id in the body used to be a 500
    (IntegrityError), against a 201 for a free id: an existence oracle. Both are now the same 400."""
    before, versions = resource_count(), ResourceVersion.objects.count()

    hidden = hospital_b.integration.put(f"/fhir/Patient?_id={patient_of_a['id']}",
                                        {**patient(), "id": patient_of_a["id"]})
    free = hospital_b.integration.put("/fhir/Patient?_id=no-such-patient", {**patient(), "id": "no-such-patient"})

    assert (hidden.status_code, free.status_code) == (400, 400)
    assert hidden.json() == free.json()
    assert (resource_count(), ResourceVersion.objects.count()) == (before, versions)


def test_conditional_update_without_an_id_still_creates_then_updates(hospital_a):
    body = patient(identifier=[{"system": "urn:mrn", "value": "c-1"}])

    created = hospital_a.integration.put("/fhir/Patient?identifier=urn:mrn|c-1", body)
    updated = hospital_a.integration.put("/fhir/Patient?identifier=urn:mrn|c-1", {**body, "id": created.json()["id"]})

    assert (created.status_code, updated.status_code) == (201, 200)


def test_conditional_update_in_a_bundle_with_a_hidden_id_is_400(hospital_a, hospital_b, patient_of_a):
    before = resource_count()
    entry = {"request": {"method": "PUT", "url": f"Patient?_id={patient_of_a['id']}"},
             "resource": {**patient(), "id": patient_of_a["id"]}}

    response = hospital_b.integration.post("/fhir", bundle("transaction", [entry]))

    assert response.status_code == 400
    assert resource_count() == before


def test_long_texts_are_stored_and_found_by_prefix(hospital_a):
    """A btree entry holds 2,704 bytes; a longer indexed text made the whole write a 500."""
    family = "Ünïcødé" + "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(5000))
    system = "urn:" + "s" * 5000
    created = hospital_a.integration.create({**patient(family=family),
                                             "identifier": [{"system": system, "value": "v" * 5000}],
                                             "managingOrganization": {"reference": "O" * 100 + "/x"}})

    by_name = hospital_a.integration.get("/fhir/Patient?family=" + quote(family[:700]))
    by_exact = hospital_a.integration.get("/fhir/Patient?family:exact=" + quote(family))
    by_token = hospital_a.integration.get("/fhir/Patient?identifier=" + quote(f"{system}|{'v' * 5000}"))

    ids = [[e["resource"]["id"] for e in r.json().get("entry", [])] for r in (by_name, by_exact, by_token)]
    assert ids == [[created["id"]]] * 3


@pytest.mark.parametrize("query", [
    "_count=1e9", "_count=99999999999999999999", "_count=-1", "_offset=1e9",
    "value-quantity=gt1e999", "value-quantity=gt1e999999", "value-quantity=1e-999999",
    "value-quantity=" + "9" * 5000, "value-quantity=ap1E+100000000000000000000",
    "combo-value-quantity=lt-1e400|http://unitsofmeasure.org|mm",
    "code=" + "x" * 100_000, "subject.name=" + "y" * 50_000, "_id=" + "z" * 10_000,
    "value-string=%ED%A0%80", "code=%ED%A0%80%ED%B0%80", "code=%F4%90%80%80", "code=%C0%AF",
    "date=" + "2020-01-01T00:00:00." + "1" * 10_000 + "Z", "_sort=" + ",".join(["code"] * 1000),
    "_include=" + "Observation:subject" * 1000, "code:text=" + "\u00e9" * 20_000,
])
def test_hostile_query_values_answer_4xx_or_a_bundle(hospital_a, patient_of_a, query):
    response = hospital_a.integration.get(f"/fhir/Observation?{query}")

    assert response.status_code in (200, 400), response.content[:300]
    expected = "Bundle" if response.status_code == 200 else "OperationOutcome"
    assert response.json()["resourceType"] == expected


def test_a_batch_entry_with_hostile_urls_fails_alone(hospital_a, patient_of_a):
    entries = [get_entry("Observation?value-quantity=gt1e999999"), get_entry("Patient?birthdate=ap0001"),
               get_entry("Observation?" + "&".join(f"subject.name=x{i}" for i in range(20))),
               get_entry("Patient/" + "x" * 10_000)]

    response = hospital_a.integration.post("/fhir", bundle("batch", entries))

    assert response.status_code == 200, response.content[:300]
    statuses = [entry["response"]["status"][:3] for entry in response.json()["entry"]]
    assert statuses == ["400", "200", "400", "404"] or all(int(s) < 500 for s in statuses), statuses
    assert json.loads(response.content)["type"] == "batch-response"
