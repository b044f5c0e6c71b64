"""OAuth2 flows through django-oauth-toolkit's endpoints, and the token on the FHIR API."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from oauth2_provider.models import AccessToken, Application, Grant

from access.models import AccessProfile, Role
from access.services import client_ensure, client_secret_reset, token_ensure

pytestmark = pytest.mark.django_db
REDIRECT = "https://app.example/callback"
AUD = "http://testserver/fhir"  # SMART: the FHIR base URL the token is for


@pytest.fixture
def integration():
    owner = get_user_model().objects.create_user("hospital-system", password=None)
    AccessProfile.objects.create(user=owner, role=Role.INTEGRATION, organization_id="org-1")
    app = client_ensure(name="hospital", owner=owner, client_type=Application.CLIENT_CONFIDENTIAL,
                        grant_type=Application.GRANT_CLIENT_CREDENTIALS, scopes="system/*.cruds")
    return app, client_secret_reset(application=app)


@pytest.fixture
def smart_app(db):
    owner = get_user_model().objects.create_user("app-owner", password=None)
    return client_ensure(name="smart", owner=owner, client_type=Application.CLIENT_PUBLIC,
                         grant_type=Application.GRANT_AUTHORIZATION_CODE,
                         scopes="launch/patient offline_access patient/*.rs user/*.rs",
                         redirect_uris=REDIRECT)


@pytest.fixture
def patient_user():
    user = get_user_model().objects.create_user("pat", password=None)
    AccessProfile.objects.create(user=user, role=Role.PATIENT, patient_id="p-42")
    return user


def basic(app: Application, secret: str) -> dict:
    pair = base64.b64encode(f"{app.client_id}:{secret}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {pair}"}


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize(client, app, challenge: str | None, scope: str = "launch/patient patient/*.rs"):
    query = {"response_type": "code", "client_id": app.client_id, "redirect_uri": REDIRECT,
             "scope": scope, "state": "s1", "aud": AUD}
    if challenge:
        query |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    return client.post("/o/authorize/", {**query, "allow": "Authorize"})


def test_client_credentials_token_works_on_metadata(client, integration):
    app, secret = integration

    response = client.post("/o/token/", {"grant_type": "client_credentials"}, **basic(app, secret))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["scope"] == "system/*.cruds" and body["token_type"] == "Bearer"
    stored = AccessToken.objects.get(application=app)
    assert stored.user is None
    assert client.get("/fhir/metadata", **bearer(body["access_token"])).status_code == 200


def test_client_credentials_narrower_scope_is_granted(client, integration):
    app, secret = integration

    response = client.post("/o/token/", {"grant_type": "client_credentials",
                                         "scope": "system/Observation.rs"}, **basic(app, secret))

    assert response.status_code == 200 and response.json()["scope"] == "system/Observation.rs"


@pytest.mark.parametrize("scope", ["user/*.cruds", "system/*.cruds openid", "admin", "system/*.x"])
def test_scopes_beyond_the_allowed_set_are_refused(client, integration, scope):
    app, secret = integration

    response = client.post("/o/token/", {"grant_type": "client_credentials", "scope": scope},
                           **basic(app, secret))

    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"
    assert not AccessToken.objects.exists()


def test_authorization_code_with_pkce_end_to_end(client, smart_app, patient_user):
    verifier, challenge = pkce()
    client.force_login(patient_user)

    page = client.get("/o/authorize/", {"response_type": "code", "client_id": smart_app.client_id,
                                        "redirect_uri": REDIRECT, "scope": "patient/*.rs", "aud": AUD,
                                        "code_challenge": challenge, "code_challenge_method": "S256"})
    answer = authorize(client, smart_app, challenge)
    params = parse_qs(urlparse(answer["Location"]).query)
    client.logout()
    token = client.post("/o/token/", {"grant_type": "authorization_code", "code": params["code"][0],
                                      "redirect_uri": REDIRECT, "client_id": smart_app.client_id,
                                      "code_verifier": verifier})

    assert page.status_code == 200
    assert answer.status_code == 302 and params["state"] == ["s1"]
    assert token.status_code == 200, token.content
    body = token.json()
    assert body["scope"] == "launch/patient patient/*.rs" and body["patient"] == "p-42"
    assert AccessToken.objects.get(application=smart_app).user == patient_user
    assert client.get("/fhir/metadata", **bearer(body["access_token"])).status_code == 200


def test_a_wrong_code_verifier_is_refused(client, smart_app, patient_user):
    _, challenge = pkce()
    client.force_login(patient_user)
    code = parse_qs(urlparse(authorize(client, smart_app, challenge)["Location"]).query)["code"][0]

    token = client.post("/o/token/", {"grant_type": "authorization_code", "code": code,
                                      "redirect_uri": REDIRECT, "client_id": smart_app.client_id,
                                      "code_verifier": pkce()[0]})

    assert token.status_code == 400 and token.json()["error"] == "invalid_grant"
    assert not AccessToken.objects.exists()


def test_authorization_without_pkce_is_refused(client, smart_app, patient_user):
    client.force_login(patient_user)

    answer = authorize(client, smart_app, challenge=None)

    assert answer.status_code == 302
    assert parse_qs(urlparse(answer["Location"]).query)["error"] == ["invalid_request"]
    assert not Grant.objects.exists()


def test_authorization_beyond_the_app_scopes_is_refused(client, smart_app, patient_user):
    client.force_login(patient_user)

    answer = authorize(client, smart_app, pkce()[1], scope="system/*.cruds")

    assert parse_qs(urlparse(answer["Location"]).query)["error"] == ["invalid_scope"]
    assert not Grant.objects.exists()


def test_fhir_request_sets_user_scopes_and_client(rf, integration):
    from access.endpoint import authenticate

    app, _ = integration
    token = token_ensure(user=None, application=app, scope="system/*.rs")
    request = rf.get("/fhir/Patient", **bearer(token.token))
    request.user = get_user_model()()

    authenticate(request)

    assert request.user == app.user
    assert request.smart_scopes.allows("Patient", "s") and not request.smart_scopes.allows("Patient", "c")
    assert request.oauth_client_id == app.client_id


def test_expired_token_is_401_invalid_token(client, integration):
    token = token_ensure(user=None, application=integration[0], scope="system/*.cruds")
    AccessToken.objects.filter(pk=token.pk).update(expires=timezone.now() - timedelta(seconds=1))

    response = client.get("/fhir/Patient", **bearer(token.token))

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="fhir", error="invalid_token"'
    assert response.json()["resourceType"] == "OperationOutcome"


def test_revoked_token_is_401(client, integration):
    app, secret = integration
    token = token_ensure(user=None, application=app, scope="system/*.cruds")

    revoked = client.post("/o/revoke_token/", {"token": token.token}, **basic(app, secret))
    response = client.get("/fhir/Patient", **bearer(token.token))

    assert revoked.status_code == 200
    assert response.status_code == 401 and "invalid_token" in response["WWW-Authenticate"]


def test_unknown_token_and_missing_credentials_are_401(client, db):
    unknown = client.get("/fhir/Patient", **bearer("nope"))
    missing = client.get("/fhir/Patient")

    assert unknown.status_code == 401 and "invalid_token" in unknown["WWW-Authenticate"]
    assert missing.status_code == 401 and missing["WWW-Authenticate"] == 'Bearer realm="fhir"'


def test_a_non_staff_session_is_not_enough_but_an_admin_session_is(client, patient_user):
    client.force_login(patient_user)
    assert client.get("/fhir/Patient").status_code == 401
    admin = get_user_model().objects.create_user("boss", password=None, is_staff=True)
    client.force_login(admin)
    assert client.get("/fhir/Patient").status_code != 401


@pytest.mark.parametrize("path", ["/.well-known/smart-configuration",
                                  "/fhir/.well-known/smart-configuration"])
def test_smart_configuration(client, db, path):
    body = client.get(path).json()

    assert body["authorization_endpoint"] == "http://testserver/o/authorize/"
    assert body["token_endpoint"] == "http://testserver/o/token/"
    assert body["issuer"] == "http://testserver"
    assert body["grant_types_supported"] == ["authorization_code", "client_credentials"]
    assert "openid" not in body["scopes_supported"]  # OpenID Connect is off
    assert body["code_challenge_methods_supported"] == ["S256"]
    assert body["response_types_supported"] == ["code"]
    assert "client_secret_basic" in body["token_endpoint_auth_methods_supported"]
    assert {"launch-standalone", "permission-v2", "client-confidential-symmetric"} <= set(
        body["capabilities"])
    assert "system/*.cruds" in body["scopes_supported"]


def test_metadata_advertises_smart_security(client, integration):
    token = token_ensure(user=None, application=integration[0], scope="system/*.cruds")

    security = client.get("/fhir/metadata", **bearer(token.token)).json()["rest"][0]["security"]

    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert security["extension"][0]["url"] == (
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris")
    assert uris["token"] == "http://testserver/o/token/"
    assert uris["authorize"] == "http://testserver/o/authorize/"
