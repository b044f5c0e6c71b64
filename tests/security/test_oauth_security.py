"""Red-team issue 11, OAuth2 / SMART findings, replayed through the real doors.

Each test sends the attack to ``/o/…`` (or the login pages) with Django's test client on
the real database and Redis, and checks the refusal and that nothing was issued.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth import get_user_model
from oauth2_provider.models import AccessToken, Application, Grant
from oauth2_provider.views import TokenView

from access import throttle
from access.models import AccessProfile, Role
from access.services import client_ensure, client_secret_reset, token_ensure
from tests.security.conftest import audit_entries_since, last_audit_pk

pytestmark = pytest.mark.django_db
REDIRECT = "https://app.example/callback"
OUR_AUD = "http://testserver/fhir"


@pytest.fixture
def address():
    """A caller address of this test's own, so counters never leak between tests."""
    value = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
    yield value
    throttle.failures_clear(throttle.keys_for(address=value, accounts=[]))


@pytest.fixture
def smart_app(db):
    owner = get_user_model().objects.create_user(f"owner-{uuid.uuid4().hex[:8]}", password=None)
    return client_ensure(name=f"smart-{uuid.uuid4().hex[:8]}", owner=owner,
                         client_type=Application.CLIENT_PUBLIC,
                         grant_type=Application.GRANT_AUTHORIZATION_CODE,
                         scopes="launch/patient patient/*.rs user/*.rs", redirect_uris=REDIRECT)


def confidential(name: str, grant=Application.GRANT_CLIENT_CREDENTIALS,
                 scopes: str = "system/*.cruds") -> tuple[Application, str]:
    owner = get_user_model().objects.create_user(f"{name}-{uuid.uuid4().hex[:8]}", password=None)
    AccessProfile.objects.create(user=owner, role=Role.INTEGRATION, organization_id=f"org-{name}")
    app = client_ensure(name=f"{name}-{uuid.uuid4().hex[:8]}", owner=owner,
                        client_type=Application.CLIENT_CONFIDENTIAL, grant_type=grant, scopes=scopes)
    return app, client_secret_reset(application=app)


@pytest.fixture
def patient_user():
    user = get_user_model().objects.create_user(f"pat-{uuid.uuid4().hex[:8]}", password=None)
    AccessProfile.objects.create(user=user, role=Role.PATIENT, patient_id="p-42")
    return user


def basic(client_id: str, secret: str) -> dict:
    pair = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {pair}"}


def challenge() -> str:
    digest = hashlib.sha256(secrets.token_urlsafe(48).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_query(app, **extra) -> dict:
    return {"response_type": "code", "client_id": app.client_id, "redirect_uri": REDIRECT,
            "scope": "patient/*.rs", "state": "s1", "code_challenge": challenge(),
            "code_challenge_method": "S256", **extra}


def redirect_params(response) -> dict:
    assert response.status_code == 302, response.content
    return parse_qs(urlparse(response["Location"]).query)


# --- finding 2: aud must be this server's FHIR base URL ------------------------------------


@pytest.mark.parametrize("aud", ["http://evil.example/fhir", "http://testserver/fhir/../evil",
                                 "http://testserver/other", "http://testserver.evil.example/fhir",
                                 "http://user@testserver/fhir", "http://testserver/fhir#x", ""])
def test_authorize_refuses_a_foreign_or_missing_aud(client, smart_app, patient_user, aud):
    client.force_login(patient_user)
    before = last_audit_pk()
    query = authorize_query(smart_app, **({"aud": aud} if aud else {}))

    shown = client.get("/o/authorize/", query)
    approved = client.post("/o/authorize/", {**query, "allow": "Authorize"})

    for answer in (shown, approved):
        params = redirect_params(answer)
        assert answer["Location"].startswith(REDIRECT + "?")
        assert params["error"] == ["invalid_request"] and params["state"] == ["s1"]
        assert "code" not in params
    assert not Grant.objects.exists() and not AccessToken.objects.exists()
    assert audit_entries_since(before) == []


@pytest.mark.parametrize("aud", [OUR_AUD, OUR_AUD + "/", "HTTP://TESTSERVER/fhir"])
def test_authorize_accepts_our_fhir_base_with_or_without_slash(client, smart_app, patient_user, aud):
    client.force_login(patient_user)
    query = authorize_query(smart_app, aud=aud)

    page = client.get("/o/authorize/", query)
    approved = client.post("/o/authorize/", {**query, "allow": "Authorize"})

    assert page.status_code == 200 and f'value="{aud}"' in page.content.decode()
    assert "code" in redirect_params(approved)
    assert Grant.objects.filter(application=smart_app).count() == 1


def test_authorize_follows_the_configured_fhir_base_url(client, smart_app, patient_user, settings):
    settings.FHIR_BASE_URL = "https://ehr.example.org/fhir"
    client.force_login(patient_user)

    ours = client.post("/o/authorize/", {**authorize_query(smart_app, aud=OUR_AUD), "allow": "Authorize"})
    configured = client.post("/o/authorize/", {**authorize_query(smart_app, aud=settings.FHIR_BASE_URL),
                                               "allow": "Authorize"})

    assert redirect_params(ours)["error"] == ["invalid_request"]
    assert "code" in redirect_params(configured)
    assert Grant.objects.count() == 1


def test_a_bad_aud_with_an_unregistered_redirect_is_not_redirected(client, smart_app, patient_user):
    client.force_login(patient_user)
    query = authorize_query(smart_app, aud="http://evil.example/fhir",
                            redirect_uri="https://evil.example/steal")

    shown = client.get("/o/authorize/", query)
    approved = client.post("/o/authorize/", {**query, "allow": "Authorize"})

    for answer in (shown, approved):
        assert answer.status_code == 400
        assert "evil.example" not in answer.get("Location", "")
    assert not Grant.objects.exists()


# --- finding 3: password grant and brute force ------------------------------------------------


def password_attempt(client, app, username, password, address, **auth):
    return client.post("/o/token/", {"grant_type": "password", "username": username,
                                     "password": password, "client_id": app.client_id, "scope": "user/*.rs"},
                       REMOTE_ADDR=address, **auth)


def test_password_grant_is_off_and_tells_nothing_about_the_password(client, smart_app, address):
    user = get_user_model().objects.create_user(f"victim-{uuid.uuid4().hex[:8]}", password="Right-horse-42")

    right = password_attempt(client, smart_app, user.username, "Right-horse-42", address)
    wrong = password_attempt(client, smart_app, user.username, "wrong", address)

    assert right.status_code == wrong.status_code == 400
    assert right.json() == wrong.json() == {"error": "unsupported_grant_type"}
    assert not AccessToken.objects.exists()


def test_when_enabled_the_password_grant_is_rate_limited(client, settings, address, monkeypatch):
    settings.OAUTH2_PASSWORD_GRANT = True
    # DOT builds its server once per process; the setting is read then (restored after the test)
    monkeypatch.delattr(TokenView, "_oauthlib_core", raising=False)
    settings.AUTH_FAILURE_ACCOUNT_LIMIT = 3
    app, secret = confidential("pwd", grant=Application.GRANT_PASSWORD, scopes="user/*.rs")
    user = get_user_model().objects.create_user(f"victim-{uuid.uuid4().hex[:8]}", password="Right-horse-42")
    AccessProfile.objects.create(user=user, role=Role.CLINICIAN, organization_id="org-pwd")

    wrong = [password_attempt(client, app, user.username, f"guess-{i}", address, **basic(app.client_id, secret))
             for i in range(3)]
    blocked = password_attempt(client, app, user.username, "Right-horse-42", address,
                               **basic(app.client_id, secret))

    assert [r.json()["error"] for r in wrong] == ["invalid_grant"] * 3
    assert blocked.status_code == 429 and int(blocked["Retry-After"]) > 0
    assert blocked.json()["error"] == "too_many_requests"
    assert not AccessToken.objects.exists()
    throttle.failures_clear(throttle.keys_for(address=address, accounts=[
        f"client:{app.client_id}", f"user:{user.username}"]))
    granted = password_attempt(client, app, user.username, "Right-horse-42", address,
                               **basic(app.client_id, secret))
    assert granted.status_code == 200, granted.content


def test_guessing_a_client_secret_is_limited_per_client_from_any_address(client, settings, address):
    settings.AUTH_FAILURE_ACCOUNT_LIMIT = 3
    app, secret = confidential("cc")
    other = address.rsplit(".", 1)[0] + ".254"

    wrong = [client.post("/o/token/", {"grant_type": "client_credentials"}, REMOTE_ADDR=address,
                         **basic(app.client_id, f"guess-{i}")) for i in range(3)]
    blocked = client.post("/o/token/", {"grant_type": "client_credentials"}, REMOTE_ADDR=other,
                          **basic(app.client_id, secret))

    assert [r.status_code for r in wrong] == [401] * 3
    assert blocked.status_code == 429 and int(blocked["Retry-After"]) <= settings.AUTH_FAILURE_WINDOW_SECONDS
    assert not AccessToken.objects.exists()
    throttle.failures_clear(throttle.keys_for(address=other, accounts=[f"client:{app.client_id}"]))


def test_one_address_guessing_many_clients_is_limited(client, settings, address):
    settings.AUTH_FAILURE_ADDRESS_LIMIT = 3
    apps = [confidential(f"addr{i}") for i in range(4)]

    answers = [client.post("/o/token/", {"grant_type": "client_credentials"}, REMOTE_ADDR=address,
                           **basic(app.client_id, "guess")) for app, _ in apps]

    assert [r.status_code for r in answers] == [401, 401, 401, 429]
    assert not AccessToken.objects.exists()


@pytest.mark.parametrize("path", ["/admin/login/", "/accounts/login/"])
def test_login_pages_are_rate_limited(client, settings, address, path):
    settings.AUTH_FAILURE_ACCOUNT_LIMIT = 3
    user = get_user_model().objects.create_user(f"staff-{uuid.uuid4().hex[:8]}", password="Right-horse-42",
                                                is_staff=True)
    client_ = client.__class__(enforce_csrf_checks=False)

    wrong = [client_.post(path, {"username": user.username, "password": f"guess-{i}"}, REMOTE_ADDR=address)
             for i in range(3)]
    blocked = client_.post(path, {"username": user.username, "password": "Right-horse-42"},
                           REMOTE_ADDR=address)

    assert [r.status_code for r in wrong] == [200] * 3
    assert blocked.status_code == 429 and "Retry-After" in blocked
    assert "_auth_user_id" not in client_.session
    throttle.failures_clear(throttle.keys_for(address=address, accounts=[f"user:{user.username}"]))


def test_a_right_login_is_not_counted(client, settings, address):
    settings.AUTH_FAILURE_ACCOUNT_LIMIT = 1
    user = get_user_model().objects.create_user(f"staff-{uuid.uuid4().hex[:8]}", password="Right-horse-42",
                                                is_staff=True)

    answers = [client.post("/admin/login/", {"username": user.username, "password": "Right-horse-42"},
                           REMOTE_ADDR=address) for _ in range(3)]

    assert [r.status_code for r in answers] == [302] * 3


# --- finding 4 and 8: introspection and revocation between clients ----------------------------


def test_introspection_answers_a_client_only_about_its_own_tokens(client, settings, address):
    app_a, secret_a = confidential("ia")
    app_b, secret_b = confidential("ib")
    token_a = token_ensure(user=None, application=app_a, scope="system/*.rs").token

    by_b = client.post("/o/introspect/", {"token": token_a}, REMOTE_ADDR=address,
                       **basic(app_b.client_id, secret_b))
    by_a = client.post("/o/introspect/", {"token": token_a}, REMOTE_ADDR=address,
                       **basic(app_a.client_id, secret_a))
    settings.OAUTH2_INTROSPECTION_CLIENTS = [app_b.client_id]
    by_resource_server = client.post("/o/introspect/", {"token": token_a}, REMOTE_ADDR=address,
                                     **basic(app_b.client_id, secret_b))

    assert by_b.status_code == 200 and by_b.json() == {"active": False}
    assert by_a.json()["active"] is True and by_a.json()["client_id"] == app_a.client_id
    assert by_resource_server.json()["active"] is True


def test_introspection_needs_a_client_secret_not_a_token_or_a_public_id(client, smart_app, address):
    app_a, _ = confidential("ic")
    token_a = token_ensure(user=None, application=app_a, scope="system/*.rs").token

    anonymous = client.post("/o/introspect/", {"token": token_a}, REMOTE_ADDR=address)
    public = client.post("/o/introspect/", {"token": token_a, "client_id": smart_app.client_id},
                         REMOTE_ADDR=address)
    bearer = client.post("/o/introspect/", {"token": token_a}, REMOTE_ADDR=address,
                         HTTP_AUTHORIZATION=f"Bearer {token_a}")
    by_get = client.get("/o/introspect/", {"token": token_a}, REMOTE_ADDR=address)

    assert [r.status_code for r in (anonymous, public, bearer, by_get)] == [401, 401, 401, 401]
    assert all("active" not in r.json() for r in (anonymous, public, bearer))


def test_a_client_cannot_revoke_another_clients_token(client, hospital_a, address):
    app_b, secret_b = confidential("rb")
    before = AccessToken.objects.count()

    answer = client.post("/o/revoke_token/", {"token": hospital_a.integration_token}, REMOTE_ADDR=address,
                         **basic(app_b.client_id, secret_b))

    assert answer.status_code == 200  # RFC 7009: no hint whether the token exists
    assert AccessToken.objects.count() == before
    assert hospital_a.integration.get("/fhir/metadata").status_code == 200


# --- finding 7: Cache-Control on personal data and tokens -------------------------------------


def test_token_answers_are_no_store_and_no_cache(client, address):
    app, secret = confidential("ns")

    granted = client.post("/o/token/", {"grant_type": "client_credentials"}, REMOTE_ADDR=address,
                          **basic(app.client_id, secret))
    refused = client.post("/o/token/", {"grant_type": "client_credentials"}, REMOTE_ADDR=address,
                          **basic(app.client_id, "wrong"))

    for answer in (granted, refused):
        assert answer["Cache-Control"] == "no-store" and answer["Pragma"] == "no-cache"


def test_records_are_no_store(client, hospital_a, patient_of_a):
    answers = [hospital_a.clinician.get(f"/fhir/Patient/{patient_of_a['id']}"),
               hospital_a.clinician.get("/fhir/Patient"),
               hospital_a.clinician.get("/dicomweb/studies"),
               hospital_a.dpo.get("/api/ledger/audit-events/1/proof"),
               client.get("/fhir/Patient")]

    assert [a["Cache-Control"] for a in answers] == ["no-store"] * len(answers)


# --- finding 8: only the working OAuth2 doors are mounted, and discovery says only what works --


@pytest.mark.parametrize("path", ["/o/applications/", "/o/applications/register/", "/o/authorized_tokens/",
                                  "/o/.well-known/openid-configuration", "/o/.well-known/jwks.json",
                                  "/o/userinfo/", "/o/logout/", "/o/device-authorization/", "/o/device/",
                                  "/o/register/", "/o/.well-known/oauth-authorization-server"])
def test_unused_dot_views_are_not_mounted(client, patient_user, path):
    staff = get_user_model().objects.create_user(f"boss-{uuid.uuid4().hex[:8]}", password=None, is_staff=True)
    client.force_login(staff)

    answer = client.get(path)

    assert answer.status_code == 404
    assert answer.json() == {"error": {"code": "not_found", "message": "Nothing is served at this address"}}
    assert Application.objects.count() == 0


def test_smart_configuration_advertises_only_what_works(client, db):
    body = client.get("/.well-known/smart-configuration").json()

    assert "password" not in body["grant_types_supported"]
    assert not {"openid", "fhirUser", "profile"} & set(body["scopes_supported"])
    assert "sso-openid-connect" not in body["capabilities"]
