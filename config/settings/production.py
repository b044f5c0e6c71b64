"""Production: every secret comes from the environment, and unsafe values stop the start."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import ANVIL_DEFAULT_PRIVATE_KEYS, env

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
CHAIN_PRIVATE_KEY = env.str("CHAIN_PRIVATE_KEY", default="")
# --- Imaging (imaging/): the de-identification key has no default here.
DEID_SECRET = env.str("DEID_SECRET", default="")
# --- end of imaging ---
CONSENT_PRIVATE_KEY = env.str("CONSENT_PRIVATE_KEY", default="")
CONSENT_PSEUDONYM_KEY = env.str("CONSENT_PSEUDONYM_KEY", default="")

# Django's own bar (security.W009): 50+ characters, and never a generated development key.
if len(SECRET_KEY) < 50 or SECRET_KEY.startswith(("dev-only", "django-insecure-")):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set to a random value of 50+ characters.")
if DEBUG:
    raise ImproperlyConfigured("DJANGO_DEBUG must be off in production.")
for _name, _key in (("CHAIN_PRIVATE_KEY", CHAIN_PRIVATE_KEY), ("CONSENT_PRIVATE_KEY", CONSENT_PRIVATE_KEY)):
    if not _key:
        raise ImproperlyConfigured(f"{_name} must be set (a signing key of this node).")
    if "0x" + _key.lower().removeprefix("0x") in ANVIL_DEFAULT_PRIVATE_KEYS:
        raise ImproperlyConfigured(f"{_name} is a public development key; use the node's own.")
if CONSENT_PRIVATE_KEY.lower().removeprefix("0x") == CHAIN_PRIVATE_KEY.lower().removeprefix("0x"):
    raise ImproperlyConfigured("CONSENT_PRIVATE_KEY must differ from CHAIN_PRIVATE_KEY (separate nonces).")
if len(CONSENT_PSEUDONYM_KEY) < 32 or CONSENT_PSEUDONYM_KEY.startswith("dev-only"):
    raise ImproperlyConfigured("CONSENT_PSEUDONYM_KEY must be set to a random value of 32+ characters.")
if len(DEID_SECRET) < 32 or DEID_SECRET.startswith("dev-only"):  # imaging
    raise ImproperlyConfigured("DEID_SECRET must be set to a random value of 32+ characters.")
if DICOM_DEFAULT_ORGANIZATION:  # noqa: F405 - imaging: an AE title is no credential
    raise ImproperlyConfigured("DICOM_DEFAULT_ORGANIZATION must be empty in production; map each AE title "
                               "in DICOM_AE_ORGANIZATIONS.")
if SUBSCRIPTION_ALLOW_HTTP or SUBSCRIPTION_ALLOW_LOOPBACK:  # noqa: F405 - receivers are https hosts
    raise ImproperlyConfigured("SUBSCRIPTION_ALLOW_HTTP and SUBSCRIPTION_ALLOW_LOOPBACK must be off in production.")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # container health checks speak plain HTTP inside
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
