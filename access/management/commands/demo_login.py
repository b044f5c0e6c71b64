"""``manage.py demo_login``: make sure the demo user exists and print how to log in.

The demo user administers the site (``/admin/``) and is, for the FHIR API, a clinician of
the organization ``demo-hospital`` (its Organization resource created if missing), so the README's quickstart can create and read records.
The password is random, made on the first start and kept (mode 0600) in the state
folder, so every start prints the same login and nothing secret is committed. The FHIR
token is an OAuth2 access token (``user/*.cruds``), reused while it stays valid.
"""

import json
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from oauth2_provider.models import Application

from access.models import AccessProfile, Role
from access.services import (
    APP_CLIENT,
    APP_REDIRECT_URI,
    APP_SCOPES,
    client_ensure,
    token_ensure,
)

DEMO_USERNAME = "demo"
DEMO_SCOPES = "user/*.cruds"
DEMO_ORGANIZATION = "demo-hospital"


class Command(BaseCommand):
    help = "Create the demo user (site administrator, FHIR clinician) once; print its login."

    def handle(self, *args, **options) -> None:
        path = settings.STATE_DIR / "demo-login.json"
        if path.exists():
            password = json.loads(path.read_text())["password"]
        else:
            password = secrets.token_urlsafe(12)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(json.dumps({"username": DEMO_USERNAME, "password": password}))
        user, created = get_user_model().objects.get_or_create(
            username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
        )
        if created or not user.check_password(password):
            user.set_password(password)
            user.save()
        AccessProfile.objects.get_or_create(
            user=user, defaults={"role": Role.CLINICIAN, "organization_id": DEMO_ORGANIZATION})
        # By name: the FHIR resource is ehr's to write, a layer above this one.
        call_command("organization_ensure", DEMO_ORGANIZATION, stdout=self.stderr)
        app = client_ensure(name=APP_CLIENT, owner=user, client_type=Application.CLIENT_PUBLIC,
                            grant_type=Application.GRANT_AUTHORIZATION_CODE, scopes=APP_SCOPES,
                            redirect_uris=APP_REDIRECT_URI)
        token = token_ensure(user=user, application=app, scope=DEMO_SCOPES)
        self.stdout.write(f"demo login: {DEMO_USERNAME} / {password}  (FHIR: Authorization: Bearer {token.token})")
