"""Test run: the services ``carrack-stack test`` started (or the ones named by the environment)."""

from .base import *  # noqa: F403

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# --- Imaging (imaging/): a fixed de-identification key for tests only.
DEID_SECRET = "dev-only-deid-secret-for-tests"
# --- end of imaging ---
