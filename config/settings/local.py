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

# --- Chain (ledger/): the embedded anvil mines a block only when a transaction arrives, so on
# an idle development node the newest anchor or grant would never see a second block. One
# confirmation here; a batch or grant that anvil loses (killed before it saved its state) is
# found by the re-check of each tick and sent again (docs/operations.md). Real chains keep the
# base default (2) or their finality rule.
AUDIT_ANCHOR_CONFIRMATIONS = env.int("AUDIT_ANCHOR_CONFIRMATIONS", default=1)
CONSENT_CONFIRMATIONS = env.int("CONSENT_CONFIRMATIONS", default=1)
# --- end of chain ---
