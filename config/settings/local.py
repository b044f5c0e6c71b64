"""Developer laptop: the embedded stack started by ``make run``."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)

# --- Imaging (imaging/): development-only de-identification key; the demo hospital owns
# what unknown AE titles send to the local SCP.
DEID_SECRET = env.str("DEID_SECRET", default="dev-only-deid-secret-not-for-real-data")
DICOM_DEFAULT_ORGANIZATION = env.str("DICOM_DEFAULT_ORGANIZATION", default="demo-hospital")
# --- end of imaging ---
