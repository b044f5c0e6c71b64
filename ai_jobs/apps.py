from django.apps import AppConfig


class AiJobsConfig(AppConfig):
    """Datasets, training and inference jobs, model provenance (coming with the AI issue)."""

    name = "ai_jobs"
    verbose_name = "AI jobs"
    default_auto_field = "django.db.models.BigAutoField"
