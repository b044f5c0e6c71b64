"""Who a user is for access control, and which SMART scopes an OAuth2 client may get.

The tables keep the names they had in ``ehr`` (``ehr_accessprofile``, ``ehr_clientscopes``):
the models moved, the rows did not (``access/migrations/0001_initial.py``).
"""

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    CLINICIAN = "clinician"
    INTEGRATION = "integration"
    RESEARCHER = "researcher"
    PATIENT = "patient"
    DPO = "dpo", "data protection officer"
    ADMIN = "admin"


class AccessProfile(models.Model):
    """Who a user is for access control: a role and the FHIR resources it is linked to.

    A clinician has an organization and a Practitioner; an integration (the owner of an
    OAuth2 client) has an organization; a patient has a Patient.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="access_profile")
    role = models.CharField(max_length=16, choices=Role.choices)
    organization_id = models.CharField(max_length=64, null=True, blank=True)
    practitioner_id = models.CharField(max_length=64, null=True, blank=True)
    patient_id = models.CharField(max_length=64, null=True, blank=True)

    class Meta:
        db_table = "ehr_accessprofile"

    def __str__(self) -> str:
        return f"{self.user} ({self.role})"


class ClientScopes(models.Model):
    """The SMART scopes an OAuth2 client may be granted; ``access.oauth`` enforces them.

    A client without a row may be granted nothing.
    """

    application = models.OneToOneField("oauth2_provider.Application", on_delete=models.CASCADE,
                                       related_name="client_scopes")
    scopes = models.TextField(help_text="Space-separated SMART scopes, e.g. 'system/*.cruds'")

    class Meta:
        db_table = "ehr_clientscopes"

    def __str__(self) -> str:
        return f"{self.application} ({self.scopes})"
