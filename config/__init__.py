"""Project configuration: settings, URLs, the Celery app and the embedded stack."""

from .celery import app as celery_app

__all__ = ["celery_app"]
