from django.apps import AppConfig


class JobsConfig(AppConfig):
    """Job rows, the registry of kinds and the runner; apps register their kinds in ``ready()``."""

    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"
