"""The FHIR API on realistic data: five Synthea patients posted as transaction Bundles.

Synthea runs once per session; the Bundles are posted once per module (inside one outer
transaction rolled back at the end), and each test reads that data through the API. Every
expected answer is computed from the Bundle JSON itself, mapped to the server's ids through
the transaction responses (entry i of the response answers entry i of the request).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest
from django.db import transaction
from django.test import Client

from ehr.models import Resource
from tests.ehr.conftest import FhirClient, integration_token

pytestmark = pytest.mark.django_db

LOINC_HEIGHT = "8302-2"


@dataclass
class Loaded:
    fhir: FhirClient
    bundles: list[dict]
    responses: list  # one HttpResponse per Bundle
    ids: list[list[str]]  # server id of each entry, per Bundle

    def patient_id(self, bundle: int) -> str:
        return self.server_ids(bundle)[0]

    def server_ids(self, bundle: int) -> list[str]:
        response = self.responses[bundle]
        assert self.ids[bundle], f"Bundle {bundle} was refused: {response.status_code} {response.content[:200]}"
        return self.ids[bundle]

    def resources(self, bundle: int, resource_type: str):
        """(server id, resource JSON) of each entry of that type in the Bundle."""
        entries = self.bundles[bundle]["entry"]
        return [(self.server_ids(bundle)[i], e["resource"]) for i, e in enumerate(entries)
                if e["resource"]["resourceType"] == resource_type]


@pytest.fixture(scope="session")
def synthea_bundles(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("synthea")
    synthea = Path(sys.executable).parent / "synthea"
    # Synthea simulates up to its reference date (default: today); a fixed one keeps the data fixed.
    subprocess.run([str(synthea), "-p", "5", "-s", "42", "-r", "20250101"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
    paths = sorted((folder / "output" / "fhir").glob("*.json"))
    assert len(paths) == 5
    return [json.loads(path.read_text()) for path in paths]


@pytest.fixture(scope="module")
def loaded(django_db_setup, django_db_blocker, synthea_bundles) -> Iterator[Loaded]:
    """Post the Bundles once; each test's own transaction nests inside this one as a savepoint."""
    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
        try:
            fhir = FhirClient(Client(), integration_token("synthea"))
            responses = [fhir.post("/fhir", bundle) for bundle in synthea_bundles]
            ids = [_server_ids(response) for response in responses]
            yield Loaded(fhir, synthea_bundles, responses, ids)
        finally:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)


def _server_ids(response) -> list[str]:
    if response.status_code != 200:
        return []
    return [entry["fullUrl"].split("/")[1] for entry in response.json()["entry"]]


def _references(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _search(loaded: Loaded, path: str) -> dict:
    response = loaded.fhir.get(path)
    assert response.status_code == 200, response.content
    return response.json()


def _ids(bundle: dict, mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def _next(bundle: dict) -> str | None:
    link = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    if link is None:
        return None
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


def _subject_is(resource: dict, patient_urn: str) -> bool:
    return any(resource.get(key, {}).get("reference") == patient_urn for key in ("subject", "patient"))


def _codes(concept: dict | None, system: str) -> set[str]:
    return {c["code"] for c in (concept or {}).get("coding", []) if c.get("system") == system}


# --- ingest ---

def test_every_transaction_answers_200_with_every_entry_created(loaded):
    for bundle, response in zip(loaded.bundles, loaded.responses):
        assert response.status_code == 200, response.content[:500]
        result = response.json()
        assert result["type"] == "transaction-response"
        statuses = Counter(entry["response"]["status"] for entry in result["entry"])
        assert statuses == {"201 Created": len(bundle["entry"])}


def test_one_current_resource_row_per_entry_of_each_type(loaded):
    expected = Counter(e["resource"]["resourceType"] for b in loaded.bundles for e in b["entry"])

    stored = Counter(Resource.objects.filter(deleted=False).values_list("resource_type", flat=True))

    assert stored == expected


def test_every_urn_uuid_reference_is_rewritten_to_a_stored_resource(loaded):
    known = {f"{t}/{i}" for t, i in Resource.objects.values_list("resource_type", "logical_id")}

    references = [ref for text in Resource.objects.values_list("text", flat=True)
                  for ref in _references(json.loads(text))]

    assert len(references) == sum(len(list(_references(b))) for b in loaded.bundles)
    assert [ref for ref in references if ref.startswith("urn:")] == []
    assert {ref for ref in references if ref not in known} == set()


# --- $everything ---

def test_everything_pages_through_the_patient_and_its_compartment(loaded):
    # Synthea links a patient's resources through subject/patient, Coverage.beneficiary and
    # Provenance.target, all compartment parameters in R4; Device is not in the compartment.
    urn = loaded.bundles[0]["entry"][0]["fullUrl"]
    entries = loaded.bundles[0]["entry"]
    expected = {loaded.patient_id(0)} | {
        loaded.ids[0][i] for i, e in enumerate(entries)
        if urn in _references(e["resource"]) and e["resource"]["resourceType"] != "Device"
    }
    by_subject = {loaded.ids[0][i] for i, e in enumerate(entries) if _subject_is(e["resource"], urn)}
    assert len(expected - by_subject) == 3  # the Patient, its Coverage and its Provenance

    gathered, pages, path = [], 0, f"/fhir/Patient/{loaded.patient_id(0)}/$everything?_count=100"
    while path:
        page = _search(loaded, path)
        assert page["total"] == len(expected)
        gathered += [e["resource"]["id"] for e in page["entry"]]
        pages, path = pages + 1, _next(page)

    assert pages == -(-len(expected) // 100)
    assert len(gathered) == len(set(gathered))
    assert set(gathered) == expected


# --- searches, expected answers computed from the Bundle JSON ---

def test_observation_by_patient_and_loinc_code(loaded):
    urn = loaded.bundles[1]["entry"][0]["fullUrl"]
    expected = {rid for rid, r in loaded.resources(1, "Observation")
                if _subject_is(r, urn) and LOINC_HEIGHT in _codes(r["code"], "http://loinc.org")}

    found = _search(loaded, f"/fhir/Observation?patient={loaded.patient_id(1)}"
                            f"&code=http://loinc.org|{LOINC_HEIGHT}&_count=200")

    assert len(expected) > 1
    assert found["total"] == len(expected)
    assert set(_ids(found)) == expected


def test_observation_by_patient_and_date_ge(loaded):
    urn = loaded.bundles[1]["entry"][0]["fullUrl"]
    expected = {rid for rid, r in loaded.resources(1, "Observation")
                if _subject_is(r, urn) and r["effectiveDateTime"][:10] >= "2020-01-01"}

    found = _search(loaded, f"/fhir/Observation?patient=Patient/{loaded.patient_id(1)}"
                            "&date=ge2020-01-01&_summary=count")

    assert 0 < len(expected) < len(loaded.resources(1, "Observation"))
    assert found["total"] == len(expected)
    assert "entry" not in found


def test_encounters_of_a_patient_sorted_by_date_descending(loaded):
    encounters = loaded.resources(4, "Encounter")
    newest_first = sorted(encounters, key=lambda item: item[1]["period"]["end"], reverse=True)
    assert len({r["period"]["end"] for _, r in encounters}) == len(encounters)  # no ties

    found = _search(loaded, f"/fhir/Encounter?patient={loaded.patient_id(4)}&_sort=-date&_count=5")

    assert _ids(found) == [rid for rid, _ in newest_first[:5]]
    assert found["total"] == len(encounters)
    assert _next(found) is not None


def test_patients_by_birthdate_and_by_name(loaded):
    patients = [(loaded.patient_id(b), bundle["entry"][0]["resource"]) for b, bundle in enumerate(loaded.bundles)]
    born_since_2005 = {pid for pid, p in patients if p["birthDate"] >= "2005-01-01"}
    pid, first = patients[2]

    by_birthdate = _search(loaded, "/fhir/Patient?birthdate=ge2005")
    by_name = _search(loaded, f"/fhir/Patient?name={first['name'][0]['family'][:4].lower()}"
                              f"&birthdate={first['birthDate']}")

    assert 0 < len(born_since_2005) < 5
    assert set(_ids(by_birthdate)) == born_since_2005
    assert by_birthdate["total"] == len(born_since_2005)
    assert _ids(by_name) == [pid]


def test_conditions_by_snomed_code_across_patients(loaded):
    conditions = [(rid, r) for b in range(5) for rid, r in loaded.resources(b, "Condition")]
    counts = Counter(code for _, r in conditions for code in _codes(r["code"], "http://snomed.info/sct"))
    code, _ = counts.most_common(1)[0]
    expected = {rid for rid, r in conditions if code in _codes(r["code"], "http://snomed.info/sct")}

    found = _search(loaded, f"/fhir/Condition?code={code}&_count=200")

    assert found["total"] == len(expected)
    assert set(_ids(found)) == expected


def test_include_adds_the_observed_patient_once(loaded):
    found = _search(loaded, f"/fhir/Observation?patient={loaded.patient_id(1)}"
                            f"&code=http://loinc.org|{LOINC_HEIGHT}&_include=Observation:patient")

    assert len(_ids(found)) > 1
    assert _ids(found, "include") == [loaded.patient_id(1)]


def test_revinclude_adds_every_observation_of_the_patient(loaded):
    urn = loaded.bundles[0]["entry"][0]["fullUrl"]
    expected = {rid for rid, r in loaded.resources(0, "Observation") if _subject_is(r, urn)}

    found = _search(loaded, f"/fhir/Patient?_id={loaded.patient_id(0)}&_revinclude=Observation:subject")

    assert _ids(found) == [loaded.patient_id(0)]
    assert len(_ids(found, "include")) == len(expected)
    assert set(_ids(found, "include")) == expected


def test_summary_count_totals_without_entries(loaded):
    expected = sum(1 for b in loaded.bundles for e in b["entry"] if e["resource"]["resourceType"] == "Observation")

    found = _search(loaded, "/fhir/Observation?_summary=count")

    assert found["total"] == expected
    assert "entry" not in found
