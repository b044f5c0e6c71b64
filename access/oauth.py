"""django-oauth-toolkit adapted to SMART on FHIR: scope syntax, per-client scope limits, tokens.

Any syntactically valid SMART scope (v1 or v2) and the launch/OpenID scopes are understood;
a client is granted only scopes within its ``ClientScopes`` (none without a row), and a
client-credentials request without ``scope`` gets exactly that allowed set.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.utils import timezone
from oauth2_provider.models import AccessToken, Application
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.scopes import BaseScopes
from oauthlib.oauth2 import Server

from .models import ClientScopes
from .scopes import SUPPORTED_SCOPES, ScopeSet, is_valid_scope, parse_scopes


class ScopeDescriptions(dict):
    """Every valid scope has a description, so DOT's consent page can list any SMART scope."""

    def __missing__(self, scope: str) -> str:
        if not is_valid_scope(scope):
            raise KeyError(scope)
        return f"SMART scope {scope}"


class SmartScopes(BaseScopes):
    def get_all_scopes(self) -> dict[str, str]:
        return ScopeDescriptions({scope: f"SMART scope {scope}" for scope in SUPPORTED_SCOPES})

    def get_available_scopes(self, application=None, request=None, *args, **kwargs) -> list[str]:
        if application is None:
            return list(SUPPORTED_SCOPES)
        return allowed_scopes(application).raw.split()

    def get_default_scopes(self, application=None, request=None, *args, **kwargs) -> list[str]:
        return self.get_available_scopes(application, request)


# Grants and response types this server does not offer (RFC 9700: no implicit grant; no
# device flow is mounted); the password grant only where OAUTH2_PASSWORD_GRANT turns it on.
DISABLED_GRANTS = ("urn:ietf:params:oauth:grant-type:device_code",)
DISABLED_RESPONSE_TYPES = ("token",)


class SmartServer(Server):
    """oauthlib's server without the grants Carrack does not offer.

    Removed at the root, a disabled grant is ``unsupported_grant_type`` before any password or
    secret is looked at: oauthlib checks a password grant's username and password *before* the
    client's allowed grant type, so a client merely refusing the grant still answered a right
    password differently from a wrong one.
    """

    def __init__(self, request_validator, *args, **kwargs) -> None:
        super().__init__(request_validator, *args, **kwargs)
        for grant in DISABLED_GRANTS + (() if password_grant_enabled() else ("password",)):
            self._grant_types.pop(grant, None)
        for response_type in DISABLED_RESPONSE_TYPES:
            self._response_types.pop(response_type, None)


def password_grant_enabled() -> bool:
    return bool(getattr(settings, "OAUTH2_PASSWORD_GRANT", False))


class SmartOAuth2Validator(OAuth2Validator):
    def validate_scopes(self, client_id, scopes, client, request, *args, **kwargs) -> bool:
        return scopes_permitted(client, scopes)

    def validate_user(self, username, password, client, request, *args, **kwargs) -> bool:
        """Second lock on the password grant: no password is checked while it is disabled."""
        if not password_grant_enabled():
            return False
        return super().validate_user(username, password, client, request, *args, **kwargs)

    def save_bearer_token(self, token, request, *args, **kwargs):
        """Adds the SMART ``patient`` launch context for a patient user who asked for it."""
        result = super().save_bearer_token(token, request, *args, **kwargs)
        profile = getattr(request.user, "access_profile", None) if request.user else None
        if "launch/patient" in token.get("scope", "").split() and profile and profile.patient_id:
            token["patient"] = profile.patient_id
        return result


def allowed_scopes(application: Application) -> ScopeSet:
    row = ClientScopes.objects.filter(application=application).first()
    return parse_scopes(row.scopes if row else "")


def scopes_permitted(application: Application, scopes: list[str]) -> bool:
    """Whether every requested scope is valid SMART syntax and within the client's allowed set."""
    if not all(is_valid_scope(scope) for scope in scopes):
        return False
    return parse_scopes(" ".join(scopes)).within(allowed_scopes(application))


def access_token_lookup(raw: str) -> AccessToken | None:
    """The live access token for a bearer value; None when unknown, revoked (deleted) or expired."""
    checksum = hashlib.sha256(raw.encode("utf-8")).hexdigest()
    token = (AccessToken.objects.select_related("application__user__access_profile",
                                                "user__access_profile")
             .filter(token_checksum=checksum).first())
    if token is None or token.expires <= timezone.now():
        return None
    return token
