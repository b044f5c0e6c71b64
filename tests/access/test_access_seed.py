"""``manage.py access_seed``: every role, idempotent, tokens that work."""

import json

import pytest
from django.core.management import CommandError, call_command
from oauth2_provider.models import AccessToken, Application

from access.models import AccessProfile, ClientScopes, Role

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


def test_running_again_keeps_the_integration_secret(client, capsys):
    first = seed(capsys)

    second = seed(capsys)
    granted = client.post("/o/token/", {"grant_type": "client_credentials",
                                        "client_id": first["integration"]["client_id"],
                                        "client_secret": first["integration"]["client_secret"]})

    assert "client_secret" not in second["integration"]
    assert granted.status_code == 200, granted.content


def test_rotate_secret_replaces_it(client, capsys):
    first = seed(capsys)

    rotated = seed(capsys, "--rotate-secret")
    old = client.post("/o/token/", {"grant_type": "client_credentials",
                                    "client_id": first["integration"]["client_id"],
                                    "client_secret": first["integration"]["client_secret"]})

    assert rotated["integration"]["client_secret"] != first["integration"]["client_secret"]
    assert old.status_code == 401


@pytest.mark.parametrize("args", [("--organization", "other-hospital"), ("--patient", "someone-else"),
                                  ("--practitioner", "other-practitioner")])
def test_an_existing_user_is_never_moved_silently(capsys, args):
    seed(capsys, "--organization", "org-7", "--patient", "p-1")
    before = list(AccessProfile.objects.order_by("pk").values_list(
        "user__username", "role", "organization_id", "practitioner_id", "patient_id"))
    secret = Application.objects.get(name="carrack-integration").client_secret

    with pytest.raises(CommandError, match="--reassign"):
        call_command("access_seed", "--organization", "org-7", "--patient", "p-1", *args)

    assert list(AccessProfile.objects.order_by("pk").values_list(
        "user__username", "role", "organization_id", "practitioner_id", "patient_id")) == before
    assert Application.objects.get(name="carrack-integration").client_secret == secret


def test_an_existing_user_with_another_role_is_refused(capsys):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("seed-dpo", password=None)
    AccessProfile.objects.create(user=user, role=Role.CLINICIAN, organization_id="org-9")

    with pytest.raises(CommandError):
        call_command("access_seed")

    assert AccessProfile.objects.get(user=user).role == Role.CLINICIAN
    assert not Application.objects.exists()


def test_reassign_moves_them_on_purpose(capsys):
    seed(capsys, "--organization", "org-7")

    seed(capsys, "--organization", "org-8", "--reassign")

    assert set(AccessProfile.objects.filter(organization_id__isnull=False)
               .values_list("organization_id", flat=True)) == {"org-8"}


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
