from django.apps import AppConfig


class EhrConfig(AppConfig):
    """FHIR resources, their storage and search (the FHIR API comes with its own issue)."""

    name = "ehr"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """The JSON reader is pure code: it gets its bounds from settings here, once."""
        from django.conf import settings

        from ehr import fhirjson

        fhirjson.configure(max_depth=settings.FHIR_JSON_MAX_DEPTH, max_values=settings.FHIR_JSON_MAX_VALUES)
