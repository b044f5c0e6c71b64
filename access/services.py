"""Writes for OAuth2 identities: clients with their allowed scopes, access tokens, the role seed."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import AccessToken, Application
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import generate_token

from .models import AccessProfile, ClientScopes, Role

INTEGRATION_CLIENT = "carrack-integration"
APP_CLIENT = "carrack-smart-app"
APP_REDIRECT_URI = "http://127.0.0.1:8000/callback"
APP_SCOPES = ("openid fhirUser launch launch/patient offline_access "
              "patient/*.cruds user/*.cruds")
# A reused token must stay valid at least this long after it is printed.
TOKEN_REUSE_MARGIN = timedelta(minutes=5)
ROLE_SCOPES = {
    Role.CLINICIAN: "user/*.cruds",
    Role.INTEGRATION: "system/*.cruds",
    Role.RESEARCHER: "user/*.rs",
    Role.PATIENT: "launch/patient patient/*.rs",
    Role.DPO: "user/*.rs user/AuditEvent.rs",
    Role.ADMIN: "user/*.rs",
}


def client_ensure(*, name: str, owner, client_type: str, grant_type: str, scopes: str,
                  redirect_uris: str = "") -> Application:
    """One application per name (created once), its allowed scopes kept in ``ClientScopes``."""
    application = Application.objects.filter(name=name).first()
    if application is None:
        application = Application.objects.create(
            name=name, user=owner, client_type=client_type, authorization_grant_type=grant_type,
            redirect_uris=redirect_uris, algorithm="",
        )
    ClientScopes.objects.update_or_create(application=application, defaults={"scopes": scopes})
    return application


def client_secret_reset(*, application: Application) -> str:
    """A new client secret (stored hashed), returned once in clear."""
    secret = generate_token()
    application.client_secret = secret
    application.save(update_fields=["client_secret"])
    return secret


def token_ensure(*, user, application: Application, scope: str) -> AccessToken:
    """An unexpired token of ``user`` for ``application`` with exactly ``scope``; made when missing.

    Reusing keeps the printed token stable across restarts (``demo_login``).
    """
    reusable = (AccessToken.objects
                .filter(user=user, application=application, scope=scope,
                        expires__gt=timezone.now() + TOKEN_REUSE_MARGIN)
                .exclude(token="").order_by("-expires").first())
    if reusable is not None:
        return reusable
    lifetime = timedelta(seconds=oauth2_settings.ACCESS_TOKEN_EXPIRE_SECONDS)
    return AccessToken.objects.create(user=user, application=application, scope=scope,
                                      token=generate_token(), expires=timezone.now() + lifetime)


class SeedConflict(Exception):
    """An existing user's access profile differs from what the seed would give it."""


def user_ensure(*, username: str, role: str, reassign: bool = False, **links) -> object:
    """A user without a usable password and its ``AccessProfile`` for ``role``.

    An existing user keeps its role and links: re-running a seed must never move someone to
    another organization or role (that would hand them another hospital's records). Only
    ``reassign`` changes them; otherwise a difference is a ``SeedConflict``.
    """
    user, created = get_user_model().objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()
        user.save()
    wanted = {"role": role, **links}
    profile = AccessProfile.objects.filter(user=user).first()
    if profile is not None and all(getattr(profile, k) == v for k, v in wanted.items()):
        return user
    if not created and not reassign:
        raise SeedConflict(f"user {username} exists with another access profile; "
                           "rerun with --reassign to change it")
    AccessProfile.objects.update_or_create(user=user, defaults=wanted)
    return user


@transaction.atomic
def access_seed(*, organization_id: str, practitioner_id: str, patient_id: str,
                reassign: bool = False, rotate_secret: bool = False) -> dict[str, dict]:
    """One user per role with a token fitting the role, the integration client and the app client.

    Idempotent: existing users keep their profiles (``SeedConflict`` unless ``reassign``) and
    the integration client keeps its secret, which is stored hashed and so printed only when
    the client is created or ``rotate_secret`` asks for a new one.
    """
    links = {
        Role.CLINICIAN: {"organization_id": organization_id, "practitioner_id": practitioner_id},
        Role.INTEGRATION: {"organization_id": organization_id},
        Role.PATIENT: {"patient_id": patient_id},
    }
    users = {role: user_ensure(username=f"seed-{role.value}", role=role, reassign=reassign,
                               **links.get(role, {}))
             for role in Role}
    new_integration = not Application.objects.filter(name=INTEGRATION_CLIENT).exists()
    integration = client_ensure(
        name=INTEGRATION_CLIENT, owner=users[Role.INTEGRATION],
        client_type=Application.CLIENT_CONFIDENTIAL,
        grant_type=Application.GRANT_CLIENT_CREDENTIALS, scopes=ROLE_SCOPES[Role.INTEGRATION])
    app = client_ensure(
        name=APP_CLIENT, owner=users[Role.ADMIN], client_type=Application.CLIENT_PUBLIC,
        grant_type=Application.GRANT_AUTHORIZATION_CODE, scopes=APP_SCOPES,
        redirect_uris=APP_REDIRECT_URI)
    result = {}
    for role, user in users.items():
        client = integration if role == Role.INTEGRATION else app
        token = token_ensure(user=None if role == Role.INTEGRATION else user, application=client,
                             scope=ROLE_SCOPES[role])
        result[role.value] = {"username": user.username, "token": token.token,
                              "client_id": client.client_id}
    if new_integration or rotate_secret:
        result[Role.INTEGRATION.value]["client_secret"] = client_secret_reset(application=integration)
    return result
