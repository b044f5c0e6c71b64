from django.apps import AppConfig


class ImagingConfig(AppConfig):
    """DICOM storage, DICOMweb and de-identification (coming with the imaging issue)."""

    name = "imaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import job_kinds  # noqa: F401 - registers imaging.deid_sweep with jobs.registry
