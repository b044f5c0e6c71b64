"""``GET /fhir/metadata``: the CapabilityStatement, generated from what the server really supports."""

from __future__ import annotations

from functools import cache

from django.conf import settings

from access.smart import capability_security
from ehr.searchparams import resource_types, supported_search_params

DEFAULT_FHIR_VERSION = "4.0.1"
SUPPORTED_FHIR_VERSIONS = {"4.0": "4.0.1", "4.0.1": "4.0.1", "4.3": "4.3.0", "4.3.0": "4.3.0"}
TYPE_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance",
                     "history-type", "create", "search-type"]
COMMON_PARAMS = {"_id", "_lastUpdated", "_tag", "_profile", "_security"}
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
            "resource": _resources(),
        }],
    }


@cache
def _resources() -> list[dict]:
    return [
        {
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
            **({"operation": [{"name": "everything",
                               "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]}
               if resource_type == "Patient" else {}),
            **(SUBSCRIPTION_CHANNELS if resource_type == "Subscription" else {}),
        }
        for resource_type in resource_types()
    ]


def _search_params(resource_type: str, only: set[str] | None = None) -> list[dict]:
    params = supported_search_params(resource_type)
    return [
        {"name": code, "definition": param.url, "type": param.type}
        for code, param in sorted(params.items())
        if only is None or code in only
    ]
