"""``GET /fhir/metadata``: the CapabilityStatement, generated from what the server really supports.

Each FHIR version gets its own list of resource types: 4.0.1 lists R4's (the vendored R4
definitions), 4.3.0 lists those this server stores in R4B (``searchparams.resource_types``), so
a strict validator of either version finds no type its version lacks. The R4 types that
R4B dropped (the MedicinalProduct family…) are listed for R4 without interactions: the
validator (``fhir.resources.R4B``) has no model for them, so none can be stored.
"""

from __future__ import annotations

from functools import cache

from django.conf import settings

from access.smart import capability_security
from ehr.searchparams import R4_TYPES_MISSING_FROM_R4B, r4_resource_types, resource_types, supported_search_params

DEFAULT_FHIR_VERSION = "4.0.1"
SUPPORTED_FHIR_VERSIONS = {"4.0": "4.0.1", "4.0.1": "4.0.1", "4.3": "4.3.0", "4.3.0": "4.3.0"}
TYPE_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance",
                     "history-type", "create", "search-type"]
COMMON_PARAMS = {"_id", "_lastUpdated", "_tag", "_profile", "_security"}
VALIDATE = {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
EVERYTHING = {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}
NOT_STORED = "Not stored: an R4 type that R4B (the validator's version) does not have"
# R4 has no element for a server's Subscription channels: say it (docs/subscriptions.md).
SUBSCRIPTION_CHANNELS = {
    "documentation": "Channel rest-hook only; payload application/fhir+json or empty; activated by a handshake ping",
    "extension": [{"url": "https://carrack.dev/fhir/StructureDefinition/subscription-channel-type",
                   "valueCode": "rest-hook"}],
}


def capability_statement(base_url: str, *, fhir_version: str | None = None) -> dict:
    version = SUPPORTED_FHIR_VERSIONS.get(fhir_version or "", DEFAULT_FHIR_VERSION)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "software": {"name": "Carrack", "version": settings.SPECTACULAR_SETTINGS["VERSION"]},
        "implementation": {"description": "Carrack FHIR server", "url": base_url},
        "fhirVersion": version,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "security": capability_security(base_url.removesuffix("/fhir")),
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"},
                            {"code": "search-system"}],
            "searchParam": _search_params("Resource", COMMON_PARAMS),
            "resource": _resources(version),
        }],
    }


@cache
def _resources(version: str) -> list[dict]:
    types = r4_resource_types() if version == "4.0.1" else resource_types()
    return [_resource(resource_type) if resource_type not in R4_TYPES_MISSING_FROM_R4B
            else {"type": resource_type, "documentation": NOT_STORED}
            for resource_type in types]


def _resource(resource_type: str) -> dict:
    return {
        "type": resource_type,
        "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalUpdate": True,
        "conditionalDelete": "not-supported",
        "searchInclude": ["*"],
        "searchRevInclude": ["*"],
        "searchParam": _search_params(resource_type),
        "operation": [EVERYTHING, VALIDATE] if resource_type == "Patient" else [VALIDATE],
        **(SUBSCRIPTION_CHANNELS if resource_type == "Subscription" else {}),
    }


def _search_params(resource_type: str, only: set[str] | None = None) -> list[dict]:
    params = supported_search_params(resource_type)
    return [
        {"name": code, "definition": param.url, "type": param.type}
        for code, param in sorted(params.items())
        if only is None or code in only
    ]
