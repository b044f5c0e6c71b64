"""``manage.py organization_ensure ORG``: the account organization's own Organization resource.

An account's organization is itself an Organization on the node (id = the organization id),
so clients can search for it and point ``managingOrganization`` and ``partOf`` at it. Created
once if missing (or deleted), owned by that organization; an existing one is left as it is
(its hospital may have written its name and identifiers since). ``access_seed`` and
``demo_login`` run it for the organization they seed.
"""

from django.core.management.base import BaseCommand, CommandError

from ehr import fhirjson
from ehr.fhir import ID_PATTERN
from ehr.models import Resource
from ehr.services import resource_update


class Command(BaseCommand):
    help = "Create the Organization resource of an account organization if it is missing."

    def add_arguments(self, parser) -> None:
        parser.add_argument("organization", help="The organization id (also the Organization's id)")

    def handle(self, *args, **options) -> None:
        organization_id = options["organization"]
        if not ID_PATTERN.fullmatch(organization_id):
            raise CommandError(f"{organization_id!r} is not a FHIR id")
        if Resource.objects.filter(resource_type="Organization", logical_id=organization_id, deleted=False).exists():
            return
        text = fhirjson.dumps({"resourceType": "Organization", "id": organization_id, "active": True,
                               "name": organization_id})
        resource_update(resource_type="Organization", logical_id=organization_id, text=text,
                        organization_id=organization_id)
        self.stdout.write(f"Organization/{organization_id} created")
