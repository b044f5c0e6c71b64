"""Developer laptop: the embedded stack started by ``make run``."""

from .base import *  # noqa: F403
from .base import env

# Never DEBUG, whatever the environment says: a debug page shows tracebacks, settings and every
# route to anyone who can reach the port. Tracebacks go to the log at LOG_LEVEL=DEBUG.
DEBUG = False
# Without DEBUG the admin's CSS and JS are served by config.urls (staticfiles finders).
SERVE_STATIC_FILES = True

# --- Imaging (imaging/): development-only de-identification key; the demo hospital owns
# what unknown AE titles send to the local SCP (logged at WARNING each time; never in production).
DEID_SECRET = env.str("DEID_SECRET", default="dev-only-deid-secret-not-for-real-data")
DICOM_DEFAULT_ORGANIZATION = env.str("DICOM_DEFAULT_ORGANIZATION", default="demo-hospital")
# --- end of imaging ---
