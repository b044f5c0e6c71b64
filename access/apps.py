from django.apps import AppConfig


class AccessConfig(AppConfig):
    """Identity and access, shared by every door (``/fhir``, ``/dicomweb``, ``/api``)."""

    name = "access"
    default_auto_field = "django.db.models.BigAutoField"
