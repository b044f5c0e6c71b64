"""Settings shared by every environment; each value can be overridden from the environment.

Embedded defaults point at the services ``make run`` starts under ``var/``
(see ``config.stack``); setting ``DATABASE_URL``, ``REDIS_URL`` or ``CHAIN_RPC_URL``
switches each one to an existing server.
"""

from pathlib import Path

import environ

from config.stack.addresses import DEFAULT_PORTS, embedded_url

BASE_DIR = Path(__file__).resolve().parents[2]

env = environ.Env()

STATE_DIR = Path(env.str("CARRACK_STATE_DIR", default=str(BASE_DIR / "var")))

# Well-known development keys of anvil's (and hardhat's) default mnemonic "test test ... junk",
# accounts 0-9 (m/44'/60'/0'/0/i): public knowledge, so production settings refuse them all.
ANVIL_DEFAULT_PRIVATE_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-secret-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "oauth2_provider",
    "access",
    "ehr",
    "imaging",
    "ledger",
    "ai_jobs",
    "jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.no_store",  # OAuth / SMART hardening (see that block below)
    "config.middleware.auth_throttle",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Embedded servers' addresses (config.stack.addresses, docs/operations.md) -----------------
# An unset DATABASE_URL, REDIS_URL or CHAIN_RPC_URL is derived from CARRACK_PG_PORT,
# CARRACK_REDIS_PORT or CARRACK_CHAIN_PORT exactly as `carrack-stack run` computes it, so a
# hand-run manage.py or celery with the stack's environment talks to that stack, not to 55432.
EMBEDDED_DATABASE_URL = embedded_url(
    "postgres", env.int("CARRACK_PG_PORT", default=DEFAULT_PORTS["postgres"]))
EMBEDDED_REDIS_URL = embedded_url(
    "redis", env.int("CARRACK_REDIS_PORT", default=DEFAULT_PORTS["redis"]))
EMBEDDED_CHAIN_RPC_URL = embedded_url(
    "anvil", env.int("CARRACK_CHAIN_PORT", default=DEFAULT_PORTS["anvil"]))
# --- end of embedded servers' addresses -------------------------------------------------------

DATABASES = {
    "default": env.db("DATABASE_URL", default=EMBEDDED_DATABASE_URL),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = True
# Persistent connections (a new PostgreSQL connection per request costs more than the read),
# checked before reuse so a restarted database is noticed.
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = 3
# JIT compilation costs ~100 ms on the search plans and saves nothing on them.
DATABASES["default"]["OPTIONS"].setdefault("options", "-c jit=off")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Transaction Bundles are large (a Synthea patient is 1-5 MB); bigger bodies get 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("MAX_REQUEST_BODY_BYTES", default=64 * 1024 * 1024)

# --- FHIR/JSON cost bounds (docs/fhir.md "Limits"): refused before the expensive work ---
# JSON nesting (400; real FHIR needs ~10-40, deep Questionnaire items a few more) and values
# (413; a 6 MB Synthea Bundle has 140k) of every JSON body, checked before it is parsed.
FHIR_JSON_MAX_DEPTH = env.int("FHIR_JSON_MAX_DEPTH", default=100)
FHIR_JSON_MAX_VALUES = env.int("FHIR_JSON_MAX_VALUES", default=2_000_000)
# Entries of a batch/transaction Bundle (413; a large Synthea patient has ~3,400).
FHIR_BUNDLE_MAX_ENTRIES = env.int("FHIR_BUNDLE_MAX_ENTRIES", default=10_000)
# Criteria of one search, and chained criteria among them (400 too-costly).
FHIR_SEARCH_MAX_PARAMS = env.int("FHIR_SEARCH_MAX_PARAMS", default=40)
FHIR_SEARCH_MAX_CHAINS = env.int("FHIR_SEARCH_MAX_CHAINS", default=8)
# One FHIR answer (413 too-costly; a batch fails the entries beyond it).
FHIR_MAX_RESPONSE_BYTES = env.int("FHIR_MAX_RESPONSE_BYTES", default=8 * 1024 * 1024)
# --- end FHIR/JSON cost bounds ---
# Check every write against R4's required bindings (ehr/bindings.py). Off only to measure the
# check's cost (bench/bench_bindings.py); a node that turns it off stores codes the spec forbids.
FHIR_VALIDATE_BINDINGS = env.bool("FHIR_VALIDATE_BINDINGS", default=True)

# --- Transient failures (access.transient; docs/operations.md "Database and broker outages") ---
# A request the database, broker or chain cannot serve now answers 503 with this Retry-After
# (seconds). A deadlocked or serialization-failed transaction runs again up to
# DB_TRANSACTION_RETRIES times, after a random pause of up to DB_RETRY_BACKOFF_SECONDS x 2^n.
TRANSIENT_RETRY_AFTER_SECONDS = env.int("TRANSIENT_RETRY_AFTER_SECONDS", default=5)
DB_TRANSACTION_RETRIES = env.int("DB_TRANSACTION_RETRIES", default=4)
DB_RETRY_BACKOFF_SECONDS = env.float("DB_RETRY_BACKOFF_SECONDS", default=0.05)
# --- end of transient failures ---

STATIC_URL = "static/"
STATIC_ROOT = STATE_DIR / "static"

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "oauth2_provider.contrib.rest_framework.OAuth2Authentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON bodies held to FHIR_JSON_MAX_DEPTH / FHIR_JSON_MAX_VALUES (config/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Carrack API",
    "DESCRIPTION": "Blockchain-anchored EHR server: ledger proofs, research exports, AI jobs.",
    "VERSION": "0.1.0",
}

# Celery: Redis is the broker; results are not needed by the web tier.
REDIS_URL = env.str("REDIS_URL", default=EMBEDDED_REDIS_URL)
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(STATE_DIR / "celerybeat-schedule")

# --- Broker timeouts (config.celery, imaging.services.deid, docs/operations.md) ---------------
# No answer waits on the broker. Its sockets time out (a paused Redis accepts connections and
# never replies); connecting gives up after BROKER_CONNECT_TIMEOUT. A publish after commit is
# waited for BROKER_PUBLISH_TIMEOUT seconds at most, then left to the outbox sweep, and after
# a failure a process skips the broker for BROKER_PUBLISH_BACKOFF_SECONDS (one warning per outage).
BROKER_CONNECT_TIMEOUT = env.float("BROKER_CONNECT_TIMEOUT", default=1.0)
BROKER_SOCKET_TIMEOUT = env.float("BROKER_SOCKET_TIMEOUT", default=5.0)  # > kombu's 1 s BRPOP
BROKER_PUBLISH_TIMEOUT = env.float("BROKER_PUBLISH_TIMEOUT", default=0.5)
BROKER_PUBLISH_BACKOFF_SECONDS = env.float("BROKER_PUBLISH_BACKOFF_SECONDS", default=10.0)
CELERY_BROKER_CONNECTION_TIMEOUT = BROKER_CONNECT_TIMEOUT
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": BROKER_CONNECT_TIMEOUT,
    "socket_timeout": BROKER_SOCKET_TIMEOUT,
    "socket_keepalive": True,
}
# --- end of broker timeouts -------------------------------------------------------------------

# Chain: one JSON-RPC endpoint, one signing key per node, contract addresses
# recorded per chain (see ledger.services.contracts_deploy).
CHAIN_RPC_URL = env.str("CHAIN_RPC_URL", default=EMBEDDED_CHAIN_RPC_URL)
CHAIN_PRIVATE_KEY = env.str("CHAIN_PRIVATE_KEY", default=ANVIL_DEFAULT_PRIVATE_KEYS[0])
CHAIN_RPC_TIMEOUT = env.float("CHAIN_RPC_TIMEOUT", default=3.0)
CHAIN_DEPLOYMENTS_FILE = Path(
    env.str("CHAIN_DEPLOYMENTS_FILE", default=str(STATE_DIR / "chain" / "deployments.json"))
)
CONTRACTS_BUILD_DIR = BASE_DIR / "contracts" / "build"
CHAIN_CONTRACTS = ["AuditAnchor", "ConsentRegistry"]

# This node's name in audit events (AuditEvent.source.observer).
NODE_NAME = env.str("CARRACK_NODE_NAME", default="carrack-local")

HEALTH_CHECK_TIMEOUT = env.float("HEALTH_CHECK_TIMEOUT", default=2.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# --- Audit anchoring (ledger.anchoring, ledger.tasks) -----------------------------------------
# A range is anchored when it holds MAX_ENTRIES entries or its oldest entry waited
# INTERVAL_SECONDS; entries count as anchored after CONFIRMATIONS blocks. A transaction not
# mined after RESEND_SECONDS is sent again (same bytes); after REPLACE_AFTER sends it is
# replaced (same nonce, fees +12.5 %). Beat runs the tick every TICK_SECONDS.
# Reorganizations (docs/operations.md "Chain reorganizations and anchoring lag"): CONFIRMATIONS
# is 2 by default, safe on a chain that may drop its newest block (anvil saving its state every
# second, a proof-of-work or proof-of-stake head); a QBFT/IBFT consortium chain has immediate
# finality and may use 1. Whatever the setting, each tick re-checks the RECHECK_BATCHES newest
# confirmed batches (receipt, block) and every batch against the contract's last anchored seq,
# and re-anchors a batch the chain lost. /healthz turns 503 when the oldest unanchored entry has
# waited LAG_ALERT_SECONDS.
AUDIT_ANCHOR_INTERVAL_SECONDS = env.float("AUDIT_ANCHOR_INTERVAL_SECONDS", default=10.0)
AUDIT_ANCHOR_MAX_ENTRIES = env.int("AUDIT_ANCHOR_MAX_ENTRIES", default=1000)
AUDIT_ANCHOR_CONFIRMATIONS = env.int("AUDIT_ANCHOR_CONFIRMATIONS", default=2)
AUDIT_ANCHOR_RECHECK_BATCHES = env.int("AUDIT_ANCHOR_RECHECK_BATCHES", default=32)
AUDIT_ANCHOR_LAG_ALERT_SECONDS = env.float("AUDIT_ANCHOR_LAG_ALERT_SECONDS", default=300.0)
AUDIT_ANCHOR_RESEND_SECONDS = env.float("AUDIT_ANCHOR_RESEND_SECONDS", default=30.0)
AUDIT_ANCHOR_REPLACE_AFTER = env.int("AUDIT_ANCHOR_REPLACE_AFTER", default=3)
AUDIT_ANCHOR_TICK_SECONDS = env.float("AUDIT_ANCHOR_TICK_SECONDS", default=5.0)
CELERY_BEAT_SCHEDULE = {
    "ledger.anchor_audit": {
        "task": "ledger.anchor_audit",
        "schedule": AUDIT_ANCHOR_TICK_SECONDS,
        # a tick nobody ran in time is dropped, not queued up behind a stopped worker
        "options": {"expires": AUDIT_ANCHOR_TICK_SECONDS},
    },
}
# --- end of audit anchoring -------------------------------------------------------------------

# --- Consent tokens (ledger.consents) ---------------------------------------------------------
# Consent tokens are signed with a key of their own, so their nonces never interleave with
# the anchoring key's. The pseudonym key makes the patient's on-chain pseudonym (HMAC);
# deleting it makes every token of this node unlinkable. A grant counts after CONFIRMATIONS
# blocks; an unmined transaction is sent again after RESEND_SECONDS. Beat sends and listens
# every SYNC_SECONDS and compares the mirror with the chain every RECONCILE_SECONDS.
CONSENT_PRIVATE_KEY = env.str("CONSENT_PRIVATE_KEY", default=ANVIL_DEFAULT_PRIVATE_KEYS[2])
CONSENT_PSEUDONYM_KEY = env.str("CONSENT_PSEUDONYM_KEY", default="dev-only-consent-pseudonym-key")
# Like AUDIT_ANCHOR_CONFIRMATIONS (2; 1 on a chain with immediate finality). The RECHECK_TRANSACTIONS
# newest mined grants and revokes are re-checked each tick; one the chain lost is sent again and
# its grant no longer counts (pending) until confirmed again.
CONSENT_CONFIRMATIONS = env.int("CONSENT_CONFIRMATIONS", default=2)
CONSENT_RECHECK_TRANSACTIONS = env.int("CONSENT_RECHECK_TRANSACTIONS", default=64)
CONSENT_RESEND_SECONDS = env.float("CONSENT_RESEND_SECONDS", default=30.0)
CONSENT_SYNC_SECONDS = env.float("CONSENT_SYNC_SECONDS", default=2.0)
CONSENT_RECONCILE_SECONDS = env.float("CONSENT_RECONCILE_SECONDS", default=600.0)
CELERY_BEAT_SCHEDULE.update({
    "ledger.consent_sync": {
        "task": "ledger.consent_sync",
        "schedule": CONSENT_SYNC_SECONDS,
        "options": {"expires": CONSENT_SYNC_SECONDS},
    },
    "ledger.consent_reconcile": {
        "task": "ledger.consent_reconcile",
        "schedule": CONSENT_RECONCILE_SECONDS,
        "options": {"expires": CONSENT_RECONCILE_SECONDS},
    },
})
# --- end of consent tokens --------------------------------------------------------------------

# --- OAuth2 / SMART on FHIR (access.oauth) ---------------------------------------------
# Authorization code requires PKCE (S256 only); client credentials get the client's allowed
# scopes (access.models.ClientScopes) by default and never more.
OAUTH2_PROVIDER = {
    "PKCE_REQUIRED": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "ACCESS_TOKEN_EXPIRE_SECONDS": env.int("OAUTH2_ACCESS_TOKEN_SECONDS", default=3600),
    "REFRESH_TOKEN_EXPIRE_SECONDS": env.int("OAUTH2_REFRESH_TOKEN_SECONDS", default=30 * 24 * 3600),
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "SCOPES_BACKEND_CLASS": "access.oauth.SmartScopes",
    "OAUTH2_VALIDATOR_CLASS": "access.oauth.SmartOAuth2Validator",
    "OAUTH2_SERVER_CLASS": "access.oauth.SmartServer",
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
}
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"  # access.ClientScopes points at it
LOGIN_URL = "/accounts/login/"
# --- end of OAuth2 / SMART -------------------------------------------------------------------

# --- OAuth / SMART hardening (access, config.middleware, docs/oauth-smart.md) ------------
# The password grant is off unless turned on (RFC 9700); even then only for clients registered
# for it. FHIR_BASE_URL is the only SMART `aud` /o/authorize accepts (empty: /fhir on the
# request's origin). Introspection answers a client about its own tokens, and the listed
# resource-server clients about any. Failed logins and client authentications are counted per
# address and per account (client id, username) in Redis; past the limit inside the window the
# answer is 429 with Retry-After.
OAUTH2_PASSWORD_GRANT = env.bool("OAUTH2_PASSWORD_GRANT", default=False)
FHIR_BASE_URL = env.str("FHIR_BASE_URL", default="")
OAUTH2_INTROSPECTION_CLIENTS = env.list("OAUTH2_INTROSPECTION_CLIENTS", default=[])
AUTH_FAILURE_ACCOUNT_LIMIT = env.int("AUTH_FAILURE_ACCOUNT_LIMIT", default=10)
AUTH_FAILURE_ADDRESS_LIMIT = env.int("AUTH_FAILURE_ADDRESS_LIMIT", default=50)
AUTH_FAILURE_WINDOW_SECONDS = env.int("AUTH_FAILURE_WINDOW_SECONDS", default=900)
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "auth-throttle": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                      "LOCATION": REDIS_URL, "KEY_PREFIX": "carrack",
                      "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1}},
}
# Static files are served by the app only under `make run` (config.settings.local).
SERVE_STATIC_FILES = False
# --- end of OAuth / SMART hardening ----------------------------------------------------------

# --- Jobs: long work as database rows (jobs/, docs/jobs.md) ----------------------------------
# A running job's worker renews its lease (JOBS_LEASE_SECONDS) as it reports progress; the sweep
# (beat, every JOBS_SWEEP_SECONDS) queues again a job whose lease expired (its worker died), up
# to JOBS_MAX_ATTEMPTS runs, and sends a queued job never sent (the broker was down at submit)
# or sent JOBS_REQUEUE_SECONDS ago and still not started (its message was lost).
JOBS_LEASE_SECONDS = env.float("JOBS_LEASE_SECONDS", default=60.0)
JOBS_SWEEP_SECONDS = env.float("JOBS_SWEEP_SECONDS", default=30.0)
JOBS_REQUEUE_SECONDS = env.float("JOBS_REQUEUE_SECONDS", default=600.0)
JOBS_MAX_ATTEMPTS = env.int("JOBS_MAX_ATTEMPTS", default=3)
CELERY_BEAT_SCHEDULE.update({
    "jobs.sweep": {
        "task": "jobs.sweep",
        "schedule": JOBS_SWEEP_SECONDS,
        "options": {"expires": JOBS_SWEEP_SECONDS},
    },
})
# --- end of jobs ------------------------------------------------------------------------------

# --- Subscriptions: R4 rest-hook (ehr/subscriptions/, docs/subscriptions.md) ---------------------
# Receivers must use https unless SUBSCRIPTION_ALLOW_HTTP; loopback and private addresses only
# where allowed (tests, a closed hospital network); link-local and metadata addresses never.
# A delivery is retried after RETRY_BASE seconds doubled per attempt (at most RETRY_MAX); after
# MAX_FAILURES consecutive failures the Subscription goes to error. Beat runs the outbox sweep
# every SWEEP_SECONDS (a write also asks for it after commit).
SUBSCRIPTIONS_ENABLED = env.bool("SUBSCRIPTIONS_ENABLED", default=True)
SUBSCRIPTION_ALLOW_HTTP = env.bool("SUBSCRIPTION_ALLOW_HTTP", default=False)
SUBSCRIPTION_ALLOW_LOOPBACK = env.bool("SUBSCRIPTION_ALLOW_LOOPBACK", default=False)
SUBSCRIPTION_ALLOW_PRIVATE = env.bool("SUBSCRIPTION_ALLOW_PRIVATE", default=False)
SUBSCRIPTION_TIMEOUT_SECONDS = env.float("SUBSCRIPTION_TIMEOUT_SECONDS", default=5.0)
SUBSCRIPTION_MAX_RESPONSE_BYTES = env.int("SUBSCRIPTION_MAX_RESPONSE_BYTES", default=64 * 1024)
SUBSCRIPTION_RETRY_BASE_SECONDS = env.float("SUBSCRIPTION_RETRY_BASE_SECONDS", default=5.0)
SUBSCRIPTION_RETRY_MAX_SECONDS = env.float("SUBSCRIPTION_RETRY_MAX_SECONDS", default=900.0)
SUBSCRIPTION_MAX_FAILURES = env.int("SUBSCRIPTION_MAX_FAILURES", default=10)
SUBSCRIPTION_SWEEP_SECONDS = env.float("SUBSCRIPTION_SWEEP_SECONDS", default=15.0)
CELERY_BEAT_SCHEDULE.update({
    "ehr.subscriptions_work": {
        "task": "ehr.subscriptions_work",
        "schedule": SUBSCRIPTION_SWEEP_SECONDS,
        "options": {"expires": SUBSCRIPTION_SWEEP_SECONDS},
    },
})
# --- end of subscriptions ----------------------------------------------------------------------

# --- Imaging: DICOM store, DIMSE SCP, DICOMweb, de-identification (imaging/, docs/imaging.md) --
# The SCP (`manage.py dicom_scp`, started by `make run`) listens on DICOM_BIND_ADDRESS:port as
# DICOM_AE_TITLE; a calling AE title is mapped to the organization that owns what it sends
# ("AE1=org-a,AE2=org-b"), else to DICOM_DEFAULT_ORGANIZATION (empty: unknown AEs are refused).
DICOM_AE_TITLE = env.str("DICOM_AE_TITLE", default="CARRACK")
DICOM_PORT = env.int("CARRACK_DICOM_PORT", default=11112)
DICOM_BIND_ADDRESS = env.str("DICOM_BIND_ADDRESS", default="127.0.0.1")
# Processes sharing the SCP port (SO_REUSEPORT): one Python process stores on one core.
DICOM_SCP_PROCESSES = env.int("DICOM_SCP_PROCESSES", default=2)
DICOM_AE_ORGANIZATIONS = env.dict("DICOM_AE_ORGANIZATIONS", default={})
DICOM_DEFAULT_ORGANIZATION = env.str("DICOM_DEFAULT_ORGANIZATION", default="")
# Decompression bombs: the decoded pixels an instance declares (Rows x Columns x Frames x bytes
# per sample x samples), per instance (refused 0xA700 on C-STORE and STOW-RS, never decoded) and
# per STOW-RS request or WADO-RS frames request (413). 1 GiB: ~1160 frames of 640x480 RGB (39 s at 30 fps).
DICOM_MAX_PIXEL_BYTES_PER_INSTANCE = env.int("DICOM_MAX_PIXEL_BYTES_PER_INSTANCE", default=1 << 30)
DICOM_MAX_PIXEL_BYTES_PER_REQUEST = env.int("DICOM_MAX_PIXEL_BYTES_PER_REQUEST", default=2 << 30)
DICOMWEB_MAX_INSTANCES_PER_REQUEST = env.int("DICOMWEB_MAX_INSTANCES_PER_REQUEST", default=1000)
# Address written in each ImagingStudy's Endpoint (absolute in production, behind the proxy).
DICOMWEB_BASE_URL = env.str("DICOMWEB_BASE_URL", default="/dicomweb")
# Instance files: a folder under the state folder, or an S3-compatible bucket (django-storages,
# `pip install -e '.[s3]'`).
IMAGING_STORAGE = env.str("IMAGING_STORAGE", default="filesystem")
if IMAGING_STORAGE == "s3":
    _DICOM_STORAGE = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": env.str("IMAGING_S3_BUCKET"),
        "endpoint_url": env.str("IMAGING_S3_ENDPOINT_URL", default="") or None,
        "region_name": env.str("IMAGING_S3_REGION", default="") or None,
        "access_key": env.str("IMAGING_S3_ACCESS_KEY_ID", default="") or None,
        "secret_key": env.str("IMAGING_S3_SECRET_ACCESS_KEY", default="") or None,
        "file_overwrite": True,
        "default_acl": None,
    }}
else:
    _DICOM_STORAGE = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {
        "location": STATE_DIR / "dicom", "allow_overwrite": True,
        "file_permissions_mode": 0o640, "directory_permissions_mode": 0o750,
    }}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "dicom": _DICOM_STORAGE,
}
# De-identified copies (imaging.deidentify_instance) are keyed with DEID_SECRET (HMAC of UIDs and
# pseudonyms); production refuses to start without one. Queued after each ingest when enabled.
DEID_SECRET = env.str("DEID_SECRET", default="")
IMAGING_DEIDENTIFY_ON_INGEST = env.bool("IMAGING_DEIDENTIFY_ON_INGEST", default=True)
# The sweep (beat, every IMAGING_DEID_SWEEP_SECONDS) publishes the copies whose message never
# reached the broker (stored GRACE seconds ago or more), and again those published
# IMAGING_DEID_REQUEUE_SECONDS ago still without one.
IMAGING_DEID_SWEEP_SECONDS = env.float("IMAGING_DEID_SWEEP_SECONDS", default=60.0)
IMAGING_DEID_SWEEP_GRACE_SECONDS = env.float("IMAGING_DEID_SWEEP_GRACE_SECONDS", default=60.0)
IMAGING_DEID_REQUEUE_SECONDS = env.float("IMAGING_DEID_REQUEUE_SECONDS", default=3600.0)
if IMAGING_DEIDENTIFY_ON_INGEST:  # copies missed while the broker was down are queued again
    CELERY_BEAT_SCHEDULE = {**CELERY_BEAT_SCHEDULE, "imaging.deidentify_pending": {
        "task": "imaging.deidentify_pending", "schedule": IMAGING_DEID_SWEEP_SECONDS,
        "options": {"expires": IMAGING_DEID_SWEEP_SECONDS}}}
# --- end of imaging ---------------------------------------------------------------------------
