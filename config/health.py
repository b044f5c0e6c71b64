"""``GET /healthz``: one answer per dependency, 200 when all are up, 503 naming what is down.

Each check has a short timeout and reports why it failed in a word or two, never a
traceback or a connection string (they may carry credentials).
"""

from __future__ import annotations

from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.utils import Error as DatabaseError
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.celery import app as celery_app
from ledger.chain import LedgerError, chain_client
from ledger.selectors import deployed_contracts

Check = dict[str, Any]


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"status": "up", "vendor": connection.vendor}
    except DatabaseError as error:
        return {"status": "down", "error": type(error).__name__}


def check_broker() -> Check:
    timeout = settings.HEALTH_CHECK_TIMEOUT
    client = redis.Redis.from_url(
        settings.CELERY_BROKER_URL, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        client.ping()
        return {"status": "up"}
    except redis.RedisError as error:
        return {"status": "down", "error": type(error).__name__}
    finally:
        client.close()


def check_worker() -> Check:
    """A Celery control ping: answered only by a worker that is consuming the broker."""
    try:
        with celery_app.connection_for_write(settings.CELERY_BROKER_URL) as broker:
            replies = celery_app.control.ping(
                timeout=settings.HEALTH_CHECK_TIMEOUT, limit=1, connection=broker
            )
    except Exception as error:  # noqa: BLE001 - kombu raises many transport errors
        return {"status": "down", "error": type(error).__name__}
    if not replies:
        return {"status": "down", "error": "no worker answered"}
    return {"status": "up", "workers": sorted(name for reply in replies for name in reply)}


def check_chain_and_contracts() -> tuple[Check, Check]:
    client = chain_client(timeout=settings.HEALTH_CHECK_TIMEOUT)
    try:
        chain_id = client.chain_id()
        chain = {"status": "up", "chain_id": chain_id, "latest_block": client.block_number()}
        return chain, _contracts_on(client, chain_id)
    except LedgerError as error:
        down = {"status": "down", "error": str(error)}
        return down, {"status": "down", "error": "chain down"}


def _contracts_on(client, chain_id: int) -> Check:
    recorded = deployed_contracts(registry=settings.CHAIN_DEPLOYMENTS_FILE, chain_id=chain_id)
    contracts = {}
    for name in settings.CHAIN_CONTRACTS:
        address = recorded.get(name, {}).get("address")
        present = bool(address) and client.has_code(address)
        contracts[name] = {"address": address, "code_present": present}
    up = all(entry["code_present"] for entry in contracts.values())
    return {"status": "up" if up else "down", **contracts}


# Entries no confirmed anchor covers: not batched yet, or in a batch that is open or lost.
# Two index scans (batch_id), so the check stays cheap on a large log.
_UNANCHORED_SQL = """
SELECT min(recorded), count(*) FROM (
    SELECT recorded FROM ledger_auditentry WHERE batch_id IS NULL
    UNION ALL
    SELECT e.recorded FROM ledger_auditentry e JOIN ledger_anchorbatch b ON b.id = e.batch_id
     WHERE b.status <> 'confirmed'
) AS unanchored
"""


def check_anchoring() -> Check:
    """Anchoring lag: how long the oldest audit entry has waited for a confirmed anchor.

    Not a dependency but the ledger's promise (every access provable on chain): past
    ``AUDIT_ANCHOR_LAG_ALERT_SECONDS`` it is down, e.g. after a chain lost blocks and the
    re-anchoring does not get through. ``unknown`` when the database cannot say.
    """
    threshold = settings.AUDIT_ANCHOR_LAG_ALERT_SECONDS
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = %s", [int(settings.HEALTH_CHECK_TIMEOUT * 1000)])
            cursor.execute(_UNANCHORED_SQL)
            oldest, count = cursor.fetchone()
            cursor.execute("SELECT count(*) FROM ledger_anchorbatch WHERE status = 'lost'")
            lost = cursor.fetchone()[0]
    except DatabaseError as error:
        return {"status": "unknown", "error": type(error).__name__}
    lag = max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else 0.0
    return {"status": "up" if lag < threshold else "down", "lag_seconds": round(lag, 1),
            "oldest_unanchored": oldest.isoformat() if oldest else None, "unanchored_entries": count,
            "lost_batches": lost, "threshold_seconds": threshold}


def health_report() -> tuple[bool, dict[str, Check]]:
    report = {"database": check_database(), "broker": check_broker()}
    broker_up = report["broker"]["status"] == "up"
    # Without a broker the control ping would block on reconnects; say so instead.
    report["worker"] = check_worker() if broker_up else {"status": "down", "error": "broker down"}
    report["chain"], report["contracts"] = check_chain_and_contracts()
    healthy = all(check["status"] == "up" for check in report.values())
    return healthy, report


@never_cache
@require_GET
@transaction.non_atomic_requests
def healthz(request):
    healthy, report = health_report()
    anchoring = check_anchoring()  # beside the dependencies: it is their outcome, not one of them
    down = [name for name, check in report.items() if check["status"] != "up"]
    if anchoring["status"] == "down":
        healthy, down = False, [*down, "anchoring"]
    body = {"status": "up" if healthy else "down", "down": down, "checks": report, "anchoring": anchoring}
    return JsonResponse(body, status=200 if healthy else 503)
