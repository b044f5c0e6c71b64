"""Settings for the gunicorn the benchmarks start: the test settings, with large Bundles accepted.

Django's default DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) refuses most Synthea transaction
Bundles (up to ~10 MB for one patient) with a 500; the project settings do not raise it yet.
"""

from config.settings.test import *  # noqa: F403

DATA_UPLOAD_MAX_MEMORY_SIZE = None
