"""Counting failed authentications, so a password or client secret cannot be guessed at speed.

A failure counts against the caller's address and against the account it named (an OAuth2
client id, a username). Once either count reaches its limit inside the window, every attempt
on that key is refused until the window ends, right credentials included: otherwise the
refusal itself would tell a right guess from a wrong one. Counters live in the shared
``auth-throttle`` cache (Redis), so every web worker sees the same numbers; when that cache
is down the limit is not enforced (logged), rather than locking every client out.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches

logger = logging.getLogger(__name__)

CACHE_ALIAS = "auth-throttle"


@dataclass(frozen=True)
class Key:
    """One counter: ``kind`` is ``address`` or ``account``, ``value`` what it counts for."""

    kind: str
    value: str

    @property
    def name(self) -> str:
        # Hashed: usernames and client ids are not written to Redis in clear.
        digest = hashlib.sha256(f"{self.kind}\0{self.value}".encode()).hexdigest()[:32]
        return f"authfail:{digest}"

    @property
    def limit(self) -> int:
        if self.kind == "address":
            return settings.AUTH_FAILURE_ADDRESS_LIMIT
        return settings.AUTH_FAILURE_ACCOUNT_LIMIT


def keys_for(*, address: str, accounts: list[str]) -> list[Key]:
    """The caller's address and every account the attempt named (client id, username)."""
    return [Key("address", address or "unknown")] + [
        Key("account", account[:256]) for account in accounts if account]


def retry_after(keys: list[Key]) -> int | None:
    """Seconds until the caller may try again, or None when no key is over its limit."""
    try:
        cache = caches[CACHE_ALIAS]
        values = cache.get_many([k.name for k in keys] + [k.name + ":until" for k in keys])
    except Exception as error:  # noqa: BLE001 - an unreachable cache must not stop logins
        logger.warning("auth throttle unavailable (%s); limit not enforced", type(error).__name__)
        return None
    waits = [values.get(k.name + ":until", 0) - time.time() for k in keys
             if values.get(k.name, 0) >= k.limit]
    return max(1, math.ceil(max(waits))) if waits else None


def failure_record(keys: list[Key]) -> None:
    """One more failure on each key; a key's window starts with its first failure."""
    window = settings.AUTH_FAILURE_WINDOW_SECONDS
    try:
        cache = caches[CACHE_ALIAS]
        for key in keys:
            if cache.add(key.name, 0, timeout=window):
                cache.set(key.name + ":until", time.time() + window, timeout=window)
            cache.incr(key.name)
    except Exception as error:  # noqa: BLE001 - see retry_after
        logger.warning("auth throttle unavailable (%s); failure not counted", type(error).__name__)


def failures_clear(keys: list[Key]) -> None:
    """Forget the counts (tests, or an operator unlocking an account)."""
    cache = caches[CACHE_ALIAS]
    cache.delete_many([k.name for k in keys] + [k.name + ":until" for k in keys])
