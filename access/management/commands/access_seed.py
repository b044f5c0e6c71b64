"""``manage.py access_seed``: users, OAuth2 clients and tokens for every role, without admin clicks.

Safe to run again: users, profiles, clients, the integration client's secret and unexpired
tokens are reused, and the organization's own Organization resource is created if missing
(``ehr``'s ``organization_ensure``). An existing user whose profile differs stops the run (exit status 1,
nothing changed) unless ``--reassign``; the secret, stored hashed, is printed only when the
client is created or ``--rotate-secret`` replaces it.
"""

import json
from pathlib import Path

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from access.services import SeedConflict, access_seed


class Command(BaseCommand):
    help = "Create one user per role with an OAuth2 token; print them as JSON."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--organization", default="carrack-hospital",
                            help="Organization id of the clinician and the integration")
        parser.add_argument("--practitioner", default="seed-practitioner",
                            help="Practitioner id of the clinician")
        parser.add_argument("--patient", default="seed-patient", help="Patient id of the patient user")
        parser.add_argument("--json", type=Path, help="Also write the JSON to this file (mode 0600)")
        parser.add_argument("--reassign", action="store_true",
                            help="Change the role or links of existing seed users to these")
        parser.add_argument("--rotate-secret", action="store_true",
                            help="Issue a new integration client secret (the old one stops working)")

    def handle(self, *args, **options) -> None:
        try:
            result = access_seed(organization_id=options["organization"],
                                 practitioner_id=options["practitioner"], patient_id=options["patient"],
                                 reassign=options["reassign"], rotate_secret=options["rotate_secret"])
        except SeedConflict as error:
            raise CommandError(str(error)) from error
        # By name: the FHIR resource is ehr's to write, a layer above this one.
        call_command("organization_ensure", options["organization"], stdout=self.stderr)
        text = json.dumps(result, indent=2)
        if options["json"]:
            options["json"].touch(mode=0o600)
            options["json"].write_text(text)
        self.stdout.write(text)
