"""``manage.py demo_login``: make sure a demo administrator exists and print how to log in.

The password is random, made on the first start and kept (mode 0600) in the state
folder, so every start prints the same login and nothing secret is committed.
"""

import json
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token

DEMO_USERNAME = "demo"


class Command(BaseCommand):
    help = "Create the demo administrator once; print its login."

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
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(f"demo login: {DEMO_USERNAME} / {password}  (FHIR: Authorization: Bearer {token.key})")
