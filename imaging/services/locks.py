"""Transaction-scoped advisory locks shared by the store and the FHIR sync."""

from __future__ import annotations

from django.db import connection


def study_lock(organization_id: str, study_uid: str) -> str:
    """The key serializing one organization's writes to one study (UIDs are per organization)."""
    return f"imaging-study:{organization_id}|{study_uid}"


def sop_lock(organization_id: str, sop_uid: str) -> str:
    """The key serializing one organization's stores of one SOP Instance UID."""
    return f"imaging-sop:{organization_id}|{sop_uid}"


def advisory_locks(keys: list[str]) -> None:
    """Transaction-scoped advisory locks on every key, taken in one sorted order (no deadlock)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) "
                       "FROM (SELECT DISTINCT k FROM unnest(%s::text[]) AS k ORDER BY k) AS keys", [keys])
