"""Index-value extraction: what each FHIR type becomes, per the R4 search rules."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from ehr import searchparams
from ehr.indexing import (
    CONVERTERS,
    DateValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    date_range,
    extract_index_values,
    normalize_string,
)


def load(text: str) -> dict:
    return json.loads(text, parse_float=Decimal)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def of(values: list, param: str) -> list:
    return [v for v in values if v.param == param]


PATIENT = load("""{
  "resourceType": "Patient", "id": "example",
  "meta": {"lastUpdated": "2024-05-06T07:08:09.123Z",
           "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
           "tag": [{"system": "http://example.org/tags", "code": "vip", "display": "VIP"}]},
  "identifier": [{"use": "usual", "type": {"coding": [{"system":
      "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}], "text": "Medical record"},
      "system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
  "active": true,
  "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
           {"use": "maiden", "family": "Núñez  De la Peña", "prefix": ["Dr."]}],
  "telecom": [{"system": "phone", "value": "(03) 5555 6473", "use": "work"},
              {"system": "email", "value": "peter@example.org"}],
  "gender": "male", "birthDate": "1974-12-25",
  "deceasedBoolean": false,
  "address": [{"use": "home", "line": ["534 Erewhon St"], "city": "PleasantVille",
               "district": "Rainbow", "state": "Vic", "postalCode": "3999", "country": "AU"}],
  "generalPractitioner": [{"reference": "Practitioner/dr-1/_history/3"},
                          {"reference": "https://other.example/fhir/Organization/org-9"},
                          {"reference": "#contained-gp"}, {"reference": "urn:uuid:5e6f"}],
  "managingOrganization": {"reference": "Organization/1"},
  "link": [{"other": {"reference": "RelatedPerson/rp"}, "type": "seealso"},
           {"other": {"reference": "Patient/old"}, "type": "replaces"}]
}""")


def test_human_name_parts_are_string_values_of_name():
    values = extract_index_values(PATIENT)

    assert of(values.strings, "name") == [
        StringValue("name", "chalmers", "Chalmers"), StringValue("name", "peter", "Peter"),
        StringValue("name", "james", "James"),
        StringValue("name", "nunez de la pena", "Núñez  De la Peña"),
        StringValue("name", "dr.", "Dr.")]
    assert of(values.strings, "family") == [
        StringValue("family", "chalmers", "Chalmers"),
        StringValue("family", "nunez de la pena", "Núñez  De la Peña")]
    assert [v.value for v in of(values.strings, "given")] == ["peter", "james"]


def test_address_parts():
    values = extract_index_values(PATIENT)

    assert [v.exact for v in of(values.strings, "address")] == [
        "534 Erewhon St", "PleasantVille", "Rainbow", "Vic", "3999", "AU"]
    assert of(values.strings, "address-city") == [
        StringValue("address-city", "pleasantville", "PleasantVille")]
    assert of(values.tokens, "address-use") == [TokenValue("address-use", None, "home", None)]


def test_identifier_telecom_code_and_boolean_tokens():
    tokens = extract_index_values(PATIENT).tokens

    assert of(tokens, "identifier") == [TokenValue(
        "identifier", "urn:oid:1.2.36.146.595.217.0.1", "12345", "medical record")]
    assert of(tokens, "telecom") == [TokenValue("telecom", None, "(03) 5555 6473", None),
                                     TokenValue("telecom", None, "peter@example.org", None)]
    assert of(tokens, "phone") == [TokenValue("phone", None, "(03) 5555 6473", None)]
    assert of(tokens, "email") == [TokenValue("email", None, "peter@example.org", None)]
    assert of(tokens, "gender") == [TokenValue("gender", None, "male", None)]
    assert of(tokens, "active") == [TokenValue("active", None, "true", None)]
    assert of(tokens, "_id") == [TokenValue("_id", None, "example", None)]
    assert of(tokens, "_tag") == [TokenValue("_tag", "http://example.org/tags", "vip", "vip")]


def test_patient_deceased_via_fhirpathpy():
    alive = extract_index_values(PATIENT).tokens
    dead = extract_index_values({**PATIENT, "deceasedDateTime": "2020-01-01",
                                 "deceasedBoolean": None})

    assert of(alive, "deceased") == [TokenValue("deceased", None, "false", None)]
    assert of(dead.tokens, "deceased") == [TokenValue("deceased", None, "true", None)]
    assert of(dead.dates, "death-date") == [
        DateValue("death-date", utc(2020, 1, 1), utc(2020, 1, 1, 23, 59, 59, 999999))]


def test_meta_params():
    values = extract_index_values(PATIENT)

    assert of(values.dates, "_lastUpdated") == [DateValue(
        "_lastUpdated", utc(2024, 5, 6, 7, 8, 9, 123000), utc(2024, 5, 6, 7, 8, 9, 123999))]
    assert of(values.uris, "_profile") == [UriValue(
        "_profile", "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient")]


def test_birthdate_is_a_whole_day():
    assert of(extract_index_values(PATIENT).dates, "birthdate") == [
        DateValue("birthdate", utc(1974, 12, 25), utc(1974, 12, 25, 23, 59, 59, 999999))]


def test_references_relative_versioned_absolute_contained_and_urn():
    references = extract_index_values(PATIENT).references

    assert of(references, "general-practitioner") == [
        ReferenceValue("general-practitioner", "Practitioner", "dr-1", None),
        ReferenceValue("general-practitioner", "Organization", "org-9",
                       "https://other.example/fhir/Organization/org-9")]
    assert of(references, "organization") == [
        ReferenceValue("organization", "Organization", "1", None)]


def test_reference_target_filter_keeps_only_the_resolved_type():
    references = extract_index_values(PATIENT).references

    assert of(references, "link") == [ReferenceValue("link", "RelatedPerson", "rp", None),
                                      ReferenceValue("link", "Patient", "old", None)]
    observation = {"resourceType": "Observation", "subject": {"reference": "Group/g1"}}
    values = extract_index_values(observation).references
    assert of(values, "subject") == [ReferenceValue("subject", "Group", "g1", None)]
    assert of(values, "patient") == []


def test_canonical_and_conditional_references():
    plan = {"resourceType": "CarePlan", "instantiatesCanonical": ["http://ex.org/PlanDefinition/p|2"],
            "basedOn": [{"reference": "CarePlan?identifier=http://x|1"}],
            "partOf": [{"reference": "urn:oid:1.2.3"}], "replaces": [{"display": "old plan"}]}
    references = extract_index_values(plan).references

    assert references == [ReferenceValue("instantiates-canonical", None, None,
                                         "http://ex.org/PlanDefinition/p|2")]


OBSERVATION = load("""{
  "resourceType": "Observation", "id": "bp", "status": "final",
  "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs", "display": "Vital Signs"}]}],
  "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "BP panel"}],
           "text": "Blood pressure"},
  "subject": {"reference": "Patient/example"},
  "effectivePeriod": {"start": "2012-09-17T10:00:00+02:00"},
  "valueQuantity": {"value": 107.50, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]"},
  "component": [
    {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
     "valueQuantity": {"value": 107, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                       "code": "mm[Hg]"}},
    {"code": {"text": "mood"}, "valueCodeableConcept": {"text": "fine"}},
    {"code": {"text": "wave"}, "valueSampledData": {"origin": {"value": 2}, "period": 10,
                                                    "dimensions": 1, "data": "1 2"}}]
}""")


def test_codeable_concept_rows_per_coding_plus_text():
    """Texts are normalized like string values: :text is a case- and accent-free prefix match."""
    tokens = extract_index_values(OBSERVATION).tokens

    assert of(tokens, "code") == [TokenValue("code", "http://loinc.org", "85354-9", "bp panel"),
                                  TokenValue("code", None, None, "blood pressure")]
    assert of(tokens, "category") == [TokenValue(
        "category", "http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs",
        "vital signs")]
    assert of(tokens, "component-code") == [TokenValue("component-code", "http://loinc.org",
                                                       "8480-6", None),
                                            TokenValue("component-code", None, None, "mood"),
                                            TokenValue("component-code", None, None, "wave")]
    assert of(tokens, "component-value-concept") == [
        TokenValue("component-value-concept", None, None, "fine")]


def test_quantity_from_value_choice():
    quantities = extract_index_values(OBSERVATION).quantities

    assert of(quantities, "value-quantity") == [QuantityValue(
        "value-quantity", Decimal("107.50"), "http://unitsofmeasure.org", "mm[Hg]", "mmHg")]
    assert of(quantities, "component-value-quantity") == [QuantityValue(
        "component-value-quantity", Decimal("107"), "http://unitsofmeasure.org", "mm[Hg]",
        "mmHg")]
    assert str(of(quantities, "value-quantity")[0].value) == "107.50"  # precision kept
    assert [v.value for v in of(quantities, "combo-value-quantity")] == [
        Decimal("107.50"), Decimal("107")]  # SampledData is not indexed


def test_period_open_end_and_timezone():
    dates = extract_index_values(OBSERVATION).dates

    assert of(dates, "date") == [DateValue("date", utc(2012, 9, 17, 8, 0, 0), None)]


def test_period_open_start():
    encounter = {"resourceType": "Encounter", "period": {"end": "2020-02"}}

    assert of(extract_index_values(encounter).dates, "date") == [
        DateValue("date", None, utc(2020, 2, 29, 23, 59, 59, 999999))]
    assert extract_index_values({"resourceType": "Encounter", "period": {}}).dates == []


def test_choice_types_go_to_their_own_params():
    string_obs = {"resourceType": "Observation", "valueString": "Ça va",
                  "effectiveDateTime": "2021-03-04T05:06:07Z"}
    date_obs = {"resourceType": "Observation", "valueDateTime": "2021"}
    values = extract_index_values(string_obs)

    assert values.strings == [StringValue("value-string", "ca va", "Ça va")]
    assert values.quantities == []
    assert of(values.dates, "date") == [DateValue("date", utc(2021, 3, 4, 5, 6, 7),
                                                  utc(2021, 3, 4, 5, 6, 7, 999999))]
    assert of(extract_index_values(date_obs).dates, "value-date") == [
        DateValue("value-date", utc(2021, 1, 1), utc(2021, 12, 31, 23, 59, 59, 999999))]


def test_condition_onset_choices():
    condition = load("""{"resourceType": "Condition", "onsetAge": {"value": 52,
        "system": "http://unitsofmeasure.org", "code": "a", "unit": "years"},
        "abatementString": "around April", "recordedDate": "2013-04-04",
        "subject": {"reference": "Patient/p1"}}""")
    values = extract_index_values(condition)

    assert values.quantities == [QuantityValue("onset-age", Decimal(52),
                                               "http://unitsofmeasure.org", "a", "years")]
    assert values.strings == [StringValue("abatement-string", "around april", "around April")]
    assert of(values.references, "patient") == [ReferenceValue("patient", "Patient", "p1", None)]
    assert of(values.dates, "onset-date") == []


def test_medication_reference_or_concept():
    by_reference = {"resourceType": "MedicationRequest",
                    "medicationReference": {"reference": "Medication/m1"}}
    by_code = {"resourceType": "MedicationRequest", "medicationCodeableConcept": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "834061"}]}}

    assert extract_index_values(by_reference).references == [
        ReferenceValue("medication", "Medication", "m1", None)]
    assert extract_index_values(by_reference).tokens == []
    assert extract_index_values(by_code).tokens == [
        TokenValue("code", "http://www.nlm.nih.gov/research/umls/rxnorm", "834061", None)]


def test_timing_events_and_bounds():
    plan = {"resourceType": "CarePlan", "activity": [{"detail": {"scheduledTiming": {
        "event": ["2020-01-01T10:00:00Z"], "repeat": {"boundsPeriod": {
            "start": "2020-01-01", "end": "2020-06-30"}}}}}]}

    assert of(extract_index_values(plan).dates, "activity-date") == [
        DateValue("activity-date", utc(2020, 1, 1, 10), utc(2020, 1, 1, 10, 0, 0, 999999)),
        DateValue("activity-date", utc(2020, 1, 1), utc(2020, 6, 30, 23, 59, 59, 999999))]


def test_money_and_number():
    claim = load("""{"resourceType": "ExplanationOfBenefit", "id": "e1"}""")
    assessment = load("""{"resourceType": "RiskAssessment",
        "prediction": [{"probabilityDecimal": 0.02}, {"probabilityRange": {"low": {"value": 1}}}]}""")
    invoice = load("""{"resourceType": "Invoice", "totalGross": {"value": 48.00, "currency": "EUR"}}""")

    assert extract_index_values(claim).quantities == []
    assert extract_index_values(assessment).numbers == [
        NumberValue("probability", Decimal("0.02"))]
    assert of(extract_index_values(invoice).quantities, "totalgross") == [
        QuantityValue("totalgross", Decimal("48.00"), "urn:iso:std:iso:4217", "EUR", None)]


def test_uri_and_canonical():
    value_set = {"resourceType": "ValueSet", "url": "http://example.org/vs", "version": "1",
                 "status": "active"}
    values = extract_index_values(value_set)

    assert values.uris == [UriValue("url", "http://example.org/vs")]
    assert of(values.tokens, "version") == [TokenValue("version", None, "1", None)]


def test_where_equals_filter_and_bundle_first_entry():
    artifact = {"resourceType": "PlanDefinition", "relatedArtifact": [
        {"type": "depends-on", "resource": "http://ex.org/Library/lib"},
        {"type": "citation", "resource": "http://ex.org/Library/cited"}]}
    bundle = {"resourceType": "Bundle", "type": "document", "entry": [
        {"resource": {"resourceType": "Composition", "id": "c1"}},
        {"resource": {"resourceType": "Patient", "id": "p1"}}]}

    assert of(extract_index_values(artifact).references, "depends-on") == [
        ReferenceValue("depends-on", None, None, "http://ex.org/Library/lib")]
    assert of(extract_index_values(artifact).references, "successor") == []
    assert of(extract_index_values(bundle).references, "composition") == [
        ReferenceValue("composition", "Composition", "c1", None)]


def test_duplicates_are_dropped():
    patient = {"resourceType": "Patient", "name": [{"given": ["Ann"]}, {"given": ["ANN", "Ann"]}]}

    assert of(extract_index_values(patient).strings, "given") == [
        StringValue("given", "ann", "Ann"), StringValue("given", "ann", "ANN")]


def test_unknown_type_and_malformed_values_yield_nothing():
    assert extract_index_values({"resourceType": "Nope", "id": "x"}).tokens == []
    broken = {"resourceType": "Patient", "birthDate": "25/12/1974", "name": "not a list",
              "gender": {"oops": 1}, "telecom": [None, 3]}
    values = extract_index_values(broken)
    assert values.dates == [] and values.strings == []
    assert values.tokens == [TokenValue("deceased", None, "false", None)]  # fhirpathpy: no value


def test_contained_resources_are_not_indexed():
    observation = {"resourceType": "Observation", "contained": [
        {"resourceType": "Patient", "id": "c", "name": [{"family": "Hidden"}]}]}

    assert extract_index_values(observation).strings == []


@pytest.mark.parametrize(("text", "expected"), [
    ("Peter", "peter"),
    ("  Núñez   De la\tPeña ", "nunez de la pena"),
    ("Straße", "strasse"),
    ("ÅNGSTRÖM", "angstrom"),
    ("ﬁle", "file"),  # compatibility ligature
    ("", ""),
])
def test_normalize_string(text, expected):
    assert normalize_string(text) == expected


@pytest.mark.parametrize(("value", "low", "high"), [
    ("2020", utc(2020, 1, 1), utc(2020, 12, 31, 23, 59, 59, 999999)),
    ("2020-02", utc(2020, 2, 1), utc(2020, 2, 29, 23, 59, 59, 999999)),
    ("2021-02", utc(2021, 2, 1), utc(2021, 2, 28, 23, 59, 59, 999999)),
    ("2020-03-04", utc(2020, 3, 4), utc(2020, 3, 4, 23, 59, 59, 999999)),
    ("2020-03-04T10:00", utc(2020, 3, 4, 10), utc(2020, 3, 4, 10, 0, 59, 999999)),
    ("2020-03-04T10:00:05", utc(2020, 3, 4, 10, 0, 5), utc(2020, 3, 4, 10, 0, 5, 999999)),
    ("2020-03-04T10:00:05Z", utc(2020, 3, 4, 10, 0, 5), utc(2020, 3, 4, 10, 0, 5, 999999)),
    ("2020-03-04T10:00:05.5Z", utc(2020, 3, 4, 10, 0, 5, 500000), utc(2020, 3, 4, 10, 0, 5, 599999)),
    ("2020-03-04T10:00:05.123456789Z", utc(2020, 3, 4, 10, 0, 5, 123456),
     utc(2020, 3, 4, 10, 0, 5, 123456)),
    ("2020-03-04T01:30:00+02:00", utc(2020, 3, 3, 23, 30), utc(2020, 3, 3, 23, 30, 0, 999999)),
    ("2020-12-31T23:00:00-05:00", utc(2021, 1, 1, 4), utc(2021, 1, 1, 4, 0, 0, 999999)),
    ("2020-03-04T10:00+05:30", utc(2020, 3, 4, 4, 30), utc(2020, 3, 4, 4, 30, 59, 999999)),
])
def test_date_range_by_precision_and_zone(value, low, high):
    assert date_range(value) == (low, high)
    assert date_range(value)[0].tzinfo is UTC


@pytest.mark.parametrize("value", [
    "", "20", "2020-13", "2020-02-30", "2020-3-4", "2020-03-04T10", "2020-03-04T25:00:00Z",
    "2020-03-04T10:00:60Z", "2020-03-04Z", "2020-03-04T10:00:00+15:00", "9999-12-31T23:00:00-05:00",
    "yesterday", "2020-03-04 10:00:00",
])
def test_date_range_rejects_bad_input(value):
    with pytest.raises(ValueError):
        date_range(value)


def test_converters_cover_exactly_the_indexable_types():
    assert {k: frozenset(v) for k, v in CONVERTERS.items()} == searchparams.INDEXABLE_TYPES


def test_synthea_bundle_resources_index(tmp_path):
    """A generated patient record: every resource indexes, the key params are found."""
    synthea = Path(sys.executable).with_name("synthea")
    subprocess.run([str(synthea), "-p", "1", "-s", "7"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=300, env={**os.environ})
    resources = []
    for path in glob.glob(str(tmp_path / "output" / "fhir" / "*.json")):
        resources += [e["resource"] for e in load(Path(path).read_text())["entry"]]
    by_type: dict[str, set[str]] = {}
    for resource in resources:
        values = extract_index_values(resource)
        params = {v.param for name in values.__slots__ for v in getattr(values, name)}
        by_type.setdefault(resource["resourceType"], set()).update(params)

    assert {"name", "birthdate", "gender", "identifier", "_id"} <= by_type["Patient"]
    assert {"code", "date", "status", "category"} <= by_type["Observation"]
    assert {"date", "class", "type"} <= by_type["Encounter"]
    assert "value-quantity" in by_type["Observation"]


def test_token_texts_are_normalized_and_empty_ones_dropped():
    condition = {"resourceType": "Condition", "code": {
        "coding": [{"system": "http://snomed.info/sct", "code": "1", "display": " Électro  CARDIO "}],
        "text": "   "}}

    assert of(extract_index_values(condition).tokens, "code") == [
        TokenValue("code", "http://snomed.info/sct", "1", "electro cardio")]
