from django.apps import AppConfig


class EhrConfig(AppConfig):
    """FHIR resources, their storage and search (the FHIR API comes with its own issue)."""

    name = "ehr"
    default_auto_field = "django.db.models.BigAutoField"
