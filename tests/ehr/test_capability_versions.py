"""The CapabilityStatement of each FHIR version names that version's resource types only."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from ehr import searchparams

pytestmark = pytest.mark.django_db
R4B = "application/fhir+json; fhirVersion=4.3"


def listed(statement: dict) -> dict[str, dict]:
    return {resource["type"]: resource for resource in statement["rest"][0]["resource"]}


def test_the_r4_statement_lists_r4_types_only_the_medicinal_product_family_included(fhir):
    statement = fhir.get("/fhir/metadata").json()
    types = listed(statement)

    assert statement["fhirVersion"] == "4.0.1"
    assert sorted(types) == sorted(searchparams.r4_resource_types()) and len(types) == 147
    assert not {"SubscriptionTopic", "Citation", "Ingredient"} & set(types)
    assert "interaction" not in types["MedicinalProduct"]  # listed, but R4B's validator cannot store it
    assert {"code": "create"} in types["Patient"]["interaction"]


def test_the_r4b_statement_lists_r4b_types(fhir):
    response = fhir.get("/fhir/metadata", HTTP_ACCEPT=R4B)
    types = listed(response.json())

    assert response.json()["fhirVersion"] == "4.3.0"
    assert sorted(types) == sorted(searchparams.resource_types())
    assert {"SubscriptionTopic", "Citation"} <= set(types)
    assert "MedicinalProduct" not in types
    CapabilityStatement.model_validate(response.json())


def test_validate_is_listed_for_every_stored_type(fhir):
    for accept in ("application/fhir+json", R4B):
        types = listed(fhir.get("/fhir/metadata", HTTP_ACCEPT=accept).json())
        for name, resource in types.items():
            if "interaction" in resource:
                assert {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"
                        } in resource["operation"], name
        assert [op["name"] for op in types["Patient"]["operation"]] == ["everything", "validate"]
