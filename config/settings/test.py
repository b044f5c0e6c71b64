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

# --- Chain confirmations (issue 12, reorganizations): the suite was written for one confirmation
# on an automining anvil (a block only per transaction); the default is 2. The reorganization
# tests (tests/reliability/test_chain_reorg.py) set 2 themselves.
AUDIT_ANCHOR_CONFIRMATIONS = env.int("AUDIT_ANCHOR_CONFIRMATIONS", default=1)  # noqa: F405
CONSENT_CONFIRMATIONS = env.int("CONSENT_CONFIRMATIONS", default=1)  # noqa: F405
# --- end of chain confirmations ---

# --- Subscriptions: the suite's receivers listen on http://127.0.0.1 (tests/ehr/test_subscriptions.py).
SUBSCRIPTION_ALLOW_HTTP = True
SUBSCRIPTION_ALLOW_LOOPBACK = True
SUBSCRIPTION_TIMEOUT_SECONDS = 2.0
# --- end of subscriptions ---
