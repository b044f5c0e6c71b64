"""Which code runs a job of each kind: apps register their handlers in ``AppConfig.ready()``.

``@job_kind("imaging.deid_sweep")`` on a function taking a ``jobs.runner.JobContext`` and
returning the job's result (JSON). The options bound each run: ``max_attempts`` (runs a
worker may die in, or a ``retry_on`` error happen in, before the job fails), and the Celery
time limits of ``jobs.run`` for this kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Callable[[Any], Any]
    max_attempts: int | None = None  # None: settings.JOBS_MAX_ATTEMPTS
    soft_time_limit: float | None = None  # None: Celery's defaults
    time_limit: float | None = None
    retry_on: tuple[type[BaseException], ...] = ()


class UnknownJobKind(LookupError):
    """No app registered a handler for this kind (a typo, or the app is not installed)."""


_KINDS: dict[str, JobKind] = {}


def job_kind(name: str, **options: Any) -> Callable[[Callable], Callable]:
    """Register the decorated function as the handler of ``name``; one handler per name."""
    def register(handler: Callable) -> Callable:
        known = _KINDS.get(name)
        if known is not None and _qualname(known.handler) != _qualname(handler):
            raise ValueError(f"job kind {name!r} is registered by {_qualname(known.handler)}")
        _KINDS[name] = JobKind(name=name, handler=handler, **options)
        return handler
    return register


def kind_get(name: str) -> JobKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise UnknownJobKind(name) from None


def kinds() -> list[str]:
    return sorted(_KINDS)


def _qualname(handler: Callable) -> str:
    return f"{handler.__module__}.{handler.__qualname__}"


def kind_find(name: str) -> JobKind | None:
    """The kind, or None when no app registered it (a row left by an uninstalled app)."""
    return _KINDS.get(name)
