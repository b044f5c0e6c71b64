"""Test run: the services ``carrack-stack test`` started (or the ones named by the environment)."""

from .base import *  # noqa: F403

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# --- Imaging (imaging/): a fixed de-identification key for tests only.
DEID_SECRET = "dev-only-deid-secret-for-tests"
# --- end of imaging ---

# Every test client calls from 127.0.0.1: the suite's deliberate failures must not add up to a
# lockout of later tests. Tests of the limit set their own (tests/security/test_oauth_security.py).
AUTH_FAILURE_ADDRESS_LIMIT = 1_000_000
AUTH_FAILURE_ACCOUNT_LIMIT = 1_000_000
