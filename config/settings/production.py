"""Production: every secret comes from the environment, and unsafe values stop the start."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import ANVIL_DEFAULT_PRIVATE_KEYS, env

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
CHAIN_PRIVATE_KEY = env.str("CHAIN_PRIVATE_KEY", default="")

if len(SECRET_KEY) < 32 or SECRET_KEY.startswith("dev-only"):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set to a random value of 32+ characters.")
if DEBUG:
    raise ImproperlyConfigured("DJANGO_DEBUG must be off in production.")
if not CHAIN_PRIVATE_KEY:
    raise ImproperlyConfigured("CHAIN_PRIVATE_KEY must be set (the node's signing key).")
if "0x" + CHAIN_PRIVATE_KEY.lower().removeprefix("0x") in ANVIL_DEFAULT_PRIVATE_KEYS:
    raise ImproperlyConfigured("CHAIN_PRIVATE_KEY is a public development key; use the node's own.")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # container health checks speak plain HTTP inside
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
