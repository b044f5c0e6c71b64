"""What the server tells SMART clients about its OAuth2 side: well-known document and metadata block."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest

from .scopes import SUPPORTED_SCOPES

# OpenID Connect is not enabled (no id_token, no userinfo): its scopes are not advertised.
OIDC_SCOPES = ("openid", "fhirUser", "profile")

SMART_CAPABILITIES = [
    "launch-standalone", "client-public", "client-confidential-symmetric",
    "context-standalone-patient", "permission-offline", "permission-patient",
    "permission-user", "permission-v1", "permission-v2",
]
OAUTH_URIS_EXTENSION = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SECURITY_SERVICE_SYSTEM = "http://terminology.hl7.org/CodeSystem/restful-security-service"


def oauth_endpoints(root: str) -> dict[str, str]:
    """The django-oauth-toolkit endpoints under ``/o/``; ``root`` is the server origin."""
    return {name: f"{root}/o/{path}/" for name, path in
            (("authorize", "authorize"), ("token", "token"), ("revoke", "revoke_token"),
             ("introspect", "introspect"))}


def smart_configuration(root: str) -> dict:
    """``/.well-known/smart-configuration`` per SMART App Launch 2.x."""
    endpoints = oauth_endpoints(root)
    return {
        "issuer": root,
        "authorization_endpoint": endpoints["authorize"],
        "token_endpoint": endpoints["token"],
        "revocation_endpoint": endpoints["revoke"],
        "introspection_endpoint": endpoints["introspect"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "scopes_supported": [scope for scope in SUPPORTED_SCOPES if scope not in OIDC_SCOPES],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": SMART_CAPABILITIES,
    }


def capability_security(root: str) -> dict:
    """``CapabilityStatement.rest[0].security``: SMART-on-FHIR with the oauth-uris extension."""
    endpoints = oauth_endpoints(root)
    return {
        "service": [{"coding": [{"system": SECURITY_SERVICE_SYSTEM, "code": "SMART-on-FHIR"}],
                     "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"}],
        "extension": [{"url": OAUTH_URIS_EXTENSION, "extension": [
            {"url": name, "valueUri": uri} for name, uri in endpoints.items()
        ]}],
        "description": "OAuth2 bearer tokens (SMART App Launch 2.x scopes); see "
                       "/.well-known/smart-configuration",
    }


def fhir_base_url(request: HttpRequest) -> str:
    """This server's FHIR base URL: ``FHIR_BASE_URL`` when set, else ``/fhir`` on the request's origin."""
    return settings.FHIR_BASE_URL or request.build_absolute_uri("/fhir")


def audience_matches(aud: str, base_url: str) -> bool:
    """Whether a SMART ``aud`` names this FHIR server (scheme and host case-insensitive,
    a trailing slash ignored); anything else, another server included, does not."""
    def normal(url: str) -> tuple[str, ...]:
        parts = urlsplit(url)
        return (parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query,
                parts.fragment)

    ours = normal(base_url)
    return bool(aud) and ours[0] in ("http", "https") and normal(aud) == ours
