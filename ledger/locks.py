"""PostgreSQL advisory locks: single-flight for ticks that may run on several workers at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


@contextmanager
def single_flight(key: int) -> Iterator[bool]:
    """Try the session lock ``key``; yields whether this caller holds it (a second one returns)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def transaction_lock(key: int) -> None:
    """Wait for the transaction-scoped lock ``key`` (released at commit or rollback)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
