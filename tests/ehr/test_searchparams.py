"""The search-parameter registry: official R4 definitions, supported subset, compiled branches."""

from __future__ import annotations

import json

import pytest

from ehr import searchparams
from ehr.fhir import model_class
from ehr.searchparams import DEFINITIONS, Branch, SearchParam

KEY_PARAMS = {
    "Patient": {"name", "family", "given", "birthdate", "identifier", "gender", "address-city",
                "general-practitioner", "telecom", "phone", "email", "active", "deceased",
                "organization", "link"},
    "Practitioner": {"name", "family", "given", "identifier", "active", "telecom", "address"},
    "PractitionerRole": {"practitioner", "organization", "role", "specialty", "location",
                         "identifier", "active"},
    "Organization": {"name", "identifier", "type", "partof", "active", "address"},
    "Location": {"name", "address", "identifier", "organization", "type", "status", "partof"},
    "Encounter": {"date", "patient", "subject", "class", "type", "status", "identifier",
                  "participant", "practitioner", "location", "service-provider", "length",
                  "reason-code", "episode-of-care"},
    "EpisodeOfCare": {"patient", "date", "status", "type", "organization", "care-manager"},
    "Observation": {"code", "date", "patient", "subject", "value-quantity", "category", "status",
                    "encounter", "value-concept", "value-string", "value-date", "component-code",
                    "component-value-quantity", "combo-code", "performer", "identifier"},
    "Condition": {"code", "patient", "subject", "clinical-status", "verification-status",
                  "category", "onset-date", "abatement-date", "recorded-date", "encounter",
                  "onset-age"},
    "Procedure": {"code", "patient", "subject", "date", "status", "performer", "encounter"},
    "DiagnosticReport": {"code", "patient", "subject", "date", "issued", "status", "category",
                         "result", "encounter", "performer"},
    "ImagingStudy": {"patient", "subject", "started", "modality", "series", "instance",
                     "identifier", "status", "bodysite", "dicom-class", "encounter"},
    "MedicationRequest": {"patient", "subject", "code", "medication", "status", "intent",
                          "authoredon", "requester", "encounter"},
    "AllergyIntolerance": {"patient", "code", "clinical-status", "verification-status",
                           "criticality", "date", "onset", "category"},
    "Immunization": {"patient", "vaccine-code", "date", "status", "lot-number", "location"},
    "DocumentReference": {"patient", "subject", "type", "category", "date", "period", "status",
                          "author", "contenttype", "location", "relatesto", "encounter"},
    "CarePlan": {"patient", "subject", "category", "date", "status", "intent", "activity-code",
                 "care-team", "encounter"},
    "CareTeam": {"patient", "subject", "participant", "status", "date", "category"},
    "Consent": {"patient", "status", "scope", "category", "date", "period", "actor", "action",
                "purpose", "organization", "data"},
    "AuditEvent": {"patient", "date", "agent", "entity", "type", "subtype", "action", "outcome",
                   "source", "site", "policy"},
    "Provenance": {"patient", "target", "agent", "recorded", "when", "entity", "location"},
    "Group": {"member", "type", "code", "actual", "characteristic", "value", "identifier"},
    "Device": {"patient", "type", "status", "identifier", "manufacturer", "model", "udi-di",
               "url", "location", "organization"},
}
COMMON = {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"}


@pytest.mark.parametrize("resource_type", sorted(KEY_PARAMS))
def test_key_official_params_are_supported(resource_type):
    supported = searchparams.supported_search_params(resource_type)

    assert KEY_PARAMS[resource_type] | COMMON <= set(supported)
    assert all(p.url.startswith("http://hl7.org/fhir/SearchParameter/") for p in supported.values())


def test_param_fields_come_from_the_official_definition():
    params = searchparams.search_params("Observation")

    assert params["patient"] == SearchParam(
        code="patient", type="reference",
        expression="Observation.subject.where(resolve() is Patient)", targets=("Patient",),
        url="http://hl7.org/fhir/SearchParameter/clinical-patient")
    assert params["value-quantity"].type == "quantity"
    assert params["_lastUpdated"] == SearchParam(
        code="_lastUpdated", type="date", expression="Resource.meta.lastUpdated", targets=(),
        url="http://hl7.org/fhir/SearchParameter/Resource-lastUpdated")
    assert searchparams.search_params("Encounter")["class"].type == "token"
    assert set(searchparams.search_params("Observation")["subject"].targets) == {
        "Patient", "Group", "Device", "Location"}


def test_expression_keeps_only_the_parts_for_the_type():
    """clinical-date covers 13 types; each type sees its own part of the union."""
    assert searchparams.search_params("Encounter")["date"].expression == "Encounter.period"
    assert searchparams.search_params("Condition")["onset-date"].expression == (
        "Condition.onset.as(dateTime) | Condition.onset.as(Period)")


def test_composite_special_and_expressionless_params_are_listed_but_unsupported():
    observation = searchparams.search_params("Observation")
    supported = searchparams.supported_search_params("Observation")

    assert observation["code-value-quantity"].type == "composite"
    assert "code-value-quantity" not in supported
    assert {"_text", "_content", "_query"} <= set(observation)
    assert not {"_text", "_content", "_query"} & set(supported)
    assert searchparams.search_params("Location")["near"].type == "special"
    assert "near" not in searchparams.supported_search_params("Location")


def test_domain_resource_params_skip_bundle_binary_parameters():
    assert "_text" in searchparams.search_params("Patient")
    assert "_text" not in searchparams.search_params("Bundle")
    assert "_id" in searchparams.supported_search_params("Binary")


def test_r4b_only_types_are_searchable_by_the_common_parameters():
    assert set(searchparams.supported_search_params("Citation")) == {
        "_id", "_lastUpdated", "_profile", "_security", "_source", "_tag"}


def test_unknown_types_have_no_params():
    assert searchparams.search_params("NotAType") == {}
    assert searchparams.supported_search_params("MedicinalProduct") == {}


def test_resource_types_are_the_r4_types_the_r4b_models_know_plus_r4b_only_ones():
    all_r4 = json.loads((DEFINITIONS / "element-types-r4.json").read_text())["resourceTypes"]
    types = searchparams.resource_types()

    assert len(all_r4) == 147
    assert len(types) == 129 + 12
    assert searchparams.R4B_ONLY_TYPES <= set(types)
    assert set(KEY_PARAMS) <= set(types)
    assert list(types) == sorted(types)
    assert all(model_class(t) is not None for t in types)
    assert searchparams.R4_TYPES_MISSING_FROM_R4B == {t for t in all_r4 if model_class(t) is None}


def test_every_type_compiles_and_supports_something():
    for resource_type in searchparams.resource_types():
        supported = searchparams.supported_search_params(resource_type)
        assert COMMON <= set(supported), resource_type
        assert set(supported) <= set(searchparams.search_params(resource_type))
        assert all(p.type not in ("composite", "special") for p in supported.values())


def test_vendored_definitions_are_r4_only():
    definitions = json.loads((DEFINITIONS / "search-parameters-r4.json").read_text())

    assert len(definitions) == 1377
    assert "DeviceDefinition-classification" not in {d["id"] for d in definitions}
    assert {k for d in definitions for k in d} <= {
        "id", "url", "code", "base", "type", "expression", "target", "multipleOr", "multipleAnd",
        "comparator", "modifier", "chain", "component"}


def test_patient_compartment():
    assert searchparams.patient_compartment("Observation") == ("subject", "performer")
    assert searchparams.patient_compartment("Encounter") == ("subject",)
    assert searchparams.patient_compartment("AllergyIntolerance") == (
        "patient", "recorder", "asserter")
    assert searchparams.patient_compartment("Patient") == ("link",)
    assert searchparams.patient_compartment("Practitioner") == ()
    assert searchparams.patient_compartment("NotAType") == ()


def test_choice_element_with_as_compiles_to_one_json_key():
    plan = searchparams.plans("Observation")["value-quantity"]

    assert plan.branches == (Branch(ops=(("get", "valueQuantity"),), fhir_type="Quantity"),)
    assert plan.skipped == ("valueSampledData: SampledData",)
    assert plan.fallback is None


def test_choice_element_without_as_expands_to_every_indexable_type():
    plan = searchparams.plans("Observation")["date"]

    assert [b.ops for b in plan.branches] == [
        (("get", "effectiveDateTime"),), (("get", "effectivePeriod"),),
        (("get", "effectiveTiming"),), (("get", "effectiveInstant"),)]
    assert [b.fhir_type for b in plan.branches] == ["dateTime", "Period", "Timing", "instant"]


def test_where_resolve_becomes_a_target_filter():
    plan = searchparams.plans("Observation")["patient"]

    assert plan.branches == (
        Branch(ops=(("get", "subject"),), fhir_type="Reference", target="Patient"),)


def test_where_equals_becomes_an_eq_op():
    plan = searchparams.plans("Patient")["phone"]

    assert plan.branches == (Branch(ops=(("get", "telecom"), ("eq", "system", "phone")),
                                    fhir_type="ContactPoint"),)


def test_backbone_elements_and_indexes_compile():
    component = searchparams.plans("Observation")["component-code"].branches
    bundle = searchparams.plans("Bundle")["composition"].branches

    assert component == (Branch((("get", "component"), ("get", "code")), "CodeableConcept"),)
    assert bundle == (Branch((("get", "entry"), ("index", 0), ("get", "resource")), "Resource"),)


def test_relative_paths_and_content_references_compile():
    name = searchparams.plans("InsurancePlan")["name"].branches
    item = searchparams.compile_expression("Questionnaire.item.item.code", "Questionnaire")

    assert [b.ops for b in name] == [(("get", "name"),), (("get", "alias"),)]
    assert item == (Branch((("get", "item"), ("get", "item"), ("get", "code")), "Coding"),)


def test_only_patient_deceased_falls_back_to_fhirpathpy():
    fallbacks = {(t, code) for t in searchparams.resource_types()
                 for code, plan in searchparams.plans(t).items() if plan.fallback}

    assert fallbacks == {("Patient", "deceased")}


def test_unsupported_expressions_raise():
    with pytest.raises(searchparams.UnsupportedExpression):
        searchparams.compile_expression("Patient.name.first()", "Patient")
    with pytest.raises(searchparams.UnsupportedExpression):
        searchparams.compile_expression("Patient.nonsense", "Patient")


def test_other_resource_roots_are_ignored():
    assert searchparams.compile_expression("Encounter.period", "Observation") == ()
