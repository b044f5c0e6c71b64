"""``manage.py access_seed``: users, OAuth2 clients and tokens for every role, without admin clicks.

Safe to run again: users, profiles, clients and unexpired tokens are reused. The integration
client's secret is stored hashed, so each run issues (and prints) a fresh one.
"""

import json
from pathlib import Path

from django.core.management.base import BaseCommand

from ehr.access.services import access_seed


class Command(BaseCommand):
    help = "Create one user per role with an OAuth2 token; print them as JSON."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--organization", default="carrack-hospital",
                            help="Organization id of the clinician and the integration")
        parser.add_argument("--practitioner", default="seed-practitioner",
                            help="Practitioner id of the clinician")
        parser.add_argument("--patient", default="seed-patient", help="Patient id of the patient user")
        parser.add_argument("--json", type=Path, help="Also write the JSON to this file (mode 0600)")

    def handle(self, *args, **options) -> None:
        result = access_seed(organization_id=options["organization"],
                             practitioner_id=options["practitioner"], patient_id=options["patient"])
        text = json.dumps(result, indent=2)
        if options["json"]:
            options["json"].touch(mode=0o600)
            options["json"].write_text(text)
        self.stdout.write(text)
