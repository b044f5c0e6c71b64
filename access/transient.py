"""Transient failures: what a client should retry later, told apart from a bug.

Every door (FHIR, DICOMweb, ``/api/``, DIMSE) asks ``fault_of`` what an unexpected error was.
A database that cannot be reached or dropped the connection, a lock or statement timeout,
a broker or chain that is down: the request did nothing and would succeed later, so the
answer is a 503 with ``Retry-After`` (a DIMSE "out of resources"), never a 500 that reads
as a defect. A deadlock or serialization failure is PostgreSQL asking for the whole
transaction to run again: ``run_retrying`` does so a bounded number of times, with jitter
so the same transactions do not collide again in step. Anything else is a 500 as before.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import kombu.exceptions
import psycopg
import redis.exceptions
from django.conf import settings
from django.db import InterfaceError as DjangoInterfaceError
from django.db import OperationalError as DjangoOperationalError
from django.db import connection, connections, transaction

from ledger.chain.errors import LedgerUnavailable

T = TypeVar("T")

# SQLSTATEs asking for the transaction to run again (deadlock_detected, serialization_failure).
RETRY_STATES = frozenset({"40P01", "40001"})
# Classes of a server that cannot serve now: connection exception, insufficient resources
# (too many connections, disk full), operator intervention (statement timeout, shutdown,
# starting up); and lock_not_available (lock_timeout).
UNAVAILABLE_CLASSES = frozenset({"08", "53", "57"})
UNAVAILABLE_STATES = frozenset({"55P03"})


class Fault(enum.Enum):
    """Why a request could not be served now; the value is the message a client sees."""

    CONFLICT = "Concurrent writes conflicted and the request was not applied; retry it"
    DATABASE = "The database is unavailable; the request was not applied, retry it later"
    BROKER = "The task queue is unavailable; the request was not applied, retry it later"
    CHAIN = "The chain is unavailable; the request was not applied, retry it later"


def fault_of(error: BaseException) -> Fault | None:
    """The transient fault behind an error (its causes included), or None for anything else."""
    for item in _causes(error):
        fault = _fault(item)
        if fault is not None:
            return fault
    return None


def _fault(error: BaseException) -> Fault | None:
    if isinstance(error, LedgerUnavailable):
        return Fault.CHAIN
    if isinstance(error, (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError,
                          redis.exceptions.TimeoutError)):
        return Fault.BROKER
    if isinstance(error, psycopg.Error):
        state = error.sqlstate
        if state in RETRY_STATES:
            return Fault.CONFLICT
        if state is None and isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)):
            return Fault.DATABASE  # no server message: the connection failed or was lost
        if state and (state[:2] in UNAVAILABLE_CLASSES or state in UNAVAILABLE_STATES):
            return Fault.DATABASE
        return None
    if isinstance(error, (DjangoOperationalError, DjangoInterfaceError)) and error.__cause__ is None:
        return Fault.DATABASE  # raised by Django itself, e.g. "connection already closed"
    return None


def _causes(error: BaseException, limit: int = 8) -> list[BaseException]:
    """The error and what it was raised from or while handling (Django wraps psycopg's errors)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(chain) < limit and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def retry_after() -> str:
    """The Retry-After header value, in seconds."""
    return str(settings.TRANSIENT_RETRY_AFTER_SECONDS)


def run_retrying(attempt: Callable[[], T], *, logger: logging.Logger, what: str) -> T:
    """Run ``attempt`` (one whole transaction), again after a deadlock or serialization failure.

    Only an attempt that owns its transaction can run again: inside an outer atomic block
    the transaction is already lost, so the error goes up at once. Pauses are random
    ("full jitter") up to DB_RETRY_BACKOFF_SECONDS × 2^n, so colliding requests spread out.
    """
    retries = settings.DB_TRANSACTION_RETRIES
    for number in range(retries + 1):
        try:
            return attempt()
        except Exception as error:
            if number == retries or connection.in_atomic_block or fault_of(error) is not Fault.CONFLICT:
                raise
            logger.info("%s: transaction retried after %s (attempt %d of %d)", what,
                        type(error).__name__, number + 2, retries + 1)
            time.sleep(random.uniform(0, settings.DB_RETRY_BACKOFF_SECONDS * 2**number))
    raise AssertionError("unreachable")  # the loop returns or raises


def connections_reset() -> None:
    """Close any database connection a failure left unusable, so the next use opens a new one.

    Requests do this through Django's request signals; threads that serve no HTTP request
    (a DIMSE association) call it after a transient fault, outside any atomic block.
    """
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


def log_fault(logger: logging.Logger, what: str, fault: Fault, error: BaseException) -> None:
    """One line per refused request: the fault and the error's type, never its message (values)."""
    logger.error("%s: %s unavailable (%s), answered retry later", what, fault.name.lower(),
                 type(error).__name__)


def refusal_finish(response, *, logger: logging.Logger, what: str, fault: Fault, error: BaseException,
                   audit: Callable[[], None]) -> None:
    """What every door does with its 503: log it once (and not again through django.request),
    and audit it in a transaction of its own unless the database itself is what is down."""
    log_fault(logger, what, fault, error)
    response["Retry-After"] = retry_after()
    response._has_been_logged = True
    if fault is Fault.DATABASE:
        return
    try:
        with transaction.atomic():
            audit()
    except Exception as audit_error:  # noqa: BLE001 - the refusal stands either way
        logger.error("audit of a refused request (%s) failed (%s)", what, type(audit_error).__name__)
