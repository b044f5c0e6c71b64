"""``manage.py access_seed``: every role, idempotent, tokens that work."""

import json

import pytest
from django.core.management import call_command
from oauth2_provider.models import AccessToken, Application

from ehr.models import AccessProfile, ClientScopes, Role

pytestmark = pytest.mark.django_db


def seed(capsys, *args) -> dict:
    call_command("access_seed", *args)
    return json.loads(capsys.readouterr().out)


def test_every_role_gets_a_user_profile_and_token(capsys):
    result = seed(capsys, "--organization", "org-7", "--patient", "p-1")

    assert set(result) == {role.value for role in Role}
    clinician = AccessProfile.objects.get(user__username=result["clinician"]["username"])
    assert (clinician.role, clinician.organization_id) == (Role.CLINICIAN, "org-7")
    assert clinician.practitioner_id
    assert AccessProfile.objects.get(role=Role.PATIENT).patient_id == "p-1"
    assert AccessToken.objects.get(token=result["patient"]["token"]).scope == "launch/patient patient/*.rs"
    assert AccessToken.objects.get(token=result["clinician"]["token"]).scope == "user/*.cruds"
    assert "client_secret" in result["integration"]
    assert "client_secret" not in result["clinician"]
    integration = Application.objects.get(client_id=result["integration"]["client_id"])
    assert ClientScopes.objects.get(application=integration).scopes == "system/*.cruds"


def test_running_twice_creates_nothing_new_and_keeps_tokens(capsys):
    first = seed(capsys)
    counts = (AccessProfile.objects.count(), Application.objects.count(), AccessToken.objects.count())

    second = seed(capsys)

    assert (AccessProfile.objects.count(), Application.objects.count(),
            AccessToken.objects.count()) == counts
    assert {r: v["token"] for r, v in first.items()} == {r: v["token"] for r, v in second.items()}


def test_seeded_tokens_authenticate_and_the_secret_works(client, capsys, tmp_path):
    out = tmp_path / "seed.json"
    result = seed(capsys, "--json", str(out))

    statuses = {role: client.get("/fhir/metadata",
                                 HTTP_AUTHORIZATION=f"Bearer {v['token']}").status_code
                for role, v in result.items()}
    granted = client.post("/o/token/", {"grant_type": "client_credentials",
                                        "client_id": result["integration"]["client_id"],
                                        "client_secret": result["integration"]["client_secret"]})

    assert statuses == {role.value: 200 for role in Role}
    assert granted.status_code == 200 and granted.json()["scope"] == "system/*.cruds"
    assert json.loads(out.read_text()) == result and out.stat().st_mode & 0o077 == 0
