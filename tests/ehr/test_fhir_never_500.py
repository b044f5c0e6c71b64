"""Property tests: no client input makes the FHIR API answer 500 or anything but an OperationOutcome."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ehr.models import Resource

pytestmark = pytest.mark.django_db

PARAMS = ["name", "family", "birthdate", "identifier", "gender", "_id", "_lastUpdated", "_count",
          "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_offset",
          "general-practitioner", "general-practitioner:Patient.name", "address-city:exact",
          "name:contains", "identifier:text", "birthdate:missing", "organization", "unknown-param"]
VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["ge1970", "eq2020-02-30", "1970-01-01T25:00", "x|y|z", "|", "\\,", ",,",
                     "Patient:general-practitioner", "*", "-birthdate,name", "-1", "99999999999",
                     "true", "count", "Patient/", "http://x/Patient/1", "ap1e10", "sa", "1e400"]),
)
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(PARAMS), VALUES), max_size=4))
@example([("name", "\x00")])  # found by this test: PostgreSQL text cannot hold NUL
@example([("_id", "\x00")])  # and the audit entry named it as the patient
def test_any_search_answers_200_or_400_with_a_bundle_or_outcome(fhir, params):
    response = fhir.get("/fhir/Patient?" + urlencode(params))

    assert response.status_code in (200, 400), (params, response.content[:300])
    expected = "Bundle" if response.status_code == 200 else "OperationOutcome"
    assert response.json()["resourceType"] == expected


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children,
                                                                       max_size=3),
    max_leaves=10,
)
PATIENT_KEYS = st.sampled_from(["name", "birthDate", "gender", "identifier", "telecom", "active",
                                "id", "meta", "contained", "extension", "deceasedBoolean", "bogus"])


@SETTINGS
@given(st.dictionaries(PATIENT_KEYS, JSON_VALUES, max_size=4))
def test_any_body_answers_201_or_4xx_and_refusals_write_nothing(fhir, members):
    before = Resource.objects.count()

    response = fhir.post("/fhir/Patient", json.dumps({"resourceType": "Patient", **members}))

    assert response.status_code in (201, 400, 422), (members, response.content[:300])
    if response.status_code != 201:
        assert response.json()["resourceType"] == "OperationOutcome"
        assert Resource.objects.count() == before


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_posted_to_the_base_answer_4xx(fhir, body):
    response = fhir.client.post("/fhir", body, content_type="application/fhir+json", **fhir.auth)

    assert 400 <= response.status_code < 500
    assert response.json()["resourceType"] == "OperationOutcome"


VALID_BUNDLE = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
    {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
     "resource": {"resourceType": "Patient", "name": [{"family": "Cut"}], "birthDate": "1970-01-01"},
     "request": {"method": "POST", "url": "Patient"}},
    {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                  "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
                  "valueQuantity": {"value": 1.50}},
     "request": {"method": "POST", "url": "Observation"}},
]})


@SETTINGS
@given(st.integers(min_value=0, max_value=len(VALID_BUNDLE) - 1))
def test_a_bundle_cut_anywhere_answers_400_and_writes_nothing(fhir, cut):
    response = fhir.post("/fhir", VALID_BUNDLE[:cut])

    assert response.status_code == 400, (cut, response.content[:300])
    assert Resource.objects.count() == 0
