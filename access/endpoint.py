"""The one audited endpoint every door goes through: ``/fhir``, ``/dicomweb``, ``/api/``.

``serve`` authenticates the caller, runs the handler and writes the request's audit entry in
one transaction, and renders whatever goes wrong in the door's own format (a ``Door``):

- allowed: the handler's work and its audit entry commit together;
- refused (a ``Refusal``) or failed (any other error, a 500): the handler ran on a
  savepoint, so it keeps none of its writes, and the audit entry of the refusal is still
  written in the request's transaction;
- the audit entry cannot be written: the whole transaction goes and the answer is a 500, an
  access that cannot be audited is refused;
- a transient fault (``access.transient``: the database, Redis or the chain down) takes the
  whole transaction: a deadlock runs it again, so a request keeps exactly one audit set
  however many attempts it took; an outage, or a deadlock past the retries, answers 503 with
  Retry-After, audited in a transaction of its own when the database is up.

Errors reach the client as the door renders them, with a fixed message: never HTML, never a
traceback; the log has the error's type (the traceback, which may quote values, at DEBUG).
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse

from . import policy, transient
from .audit import AccessRecord, write_audit
from .errors import Refusal
from .oauth import access_token_lookup
from .scopes import parse_scopes


class Door:
    """How one protocol answers: its name in the logs, its logger and its error format.

    A door renders a ``Refusal`` (``render``) and names the refusals of the mechanism itself:
    a handler that failed, an access that could not be audited, a transient outage.
    """

    name = "API"
    failed = Refusal(500, "exception", "Internal error; the request was not applied")
    not_audited = Refusal(500, "exception", "The access could not be audited")
    too_large = Refusal(413, "too-costly", "The request body is too large")

    def __init__(self, logger: logging.Logger, *, name: str | None = None) -> None:
        self.logger = logger
        if name is not None:
            self.name = name

    def render(self, refusal: Refusal) -> HttpResponse:
        raise NotImplementedError

    def unavailable(self, fault: transient.Fault) -> Refusal:
        """503 with Retry-After: nothing was applied, the same request may be sent again."""
        return Refusal(503, "transient", fault.value, headers={"Retry-After": transient.retry_after()})

    def prepare(self, request: HttpRequest) -> None:
        """What the door checks before authentication (media types); raises a ``Refusal``."""

    def finish(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        """The last look at the answer, after its transaction (a DICOMweb upload is drained)."""
        return response


class Unapplied(Exception):  # noqa: N818 - not an error: an answer whose writes are undone
    """A handler's own error answer (DRF renders its exceptions itself): the answer stands,
    the handler's writes are rolled back with its savepoint, as for a ``Refusal``."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


class Authentication(enum.Enum):
    REQUIRED = "required"
    IF_SENT = "if-sent"  # public (a CapabilityStatement) unless the client sends a token
    BY_HANDLER = "by-handler"  # a DRF view authenticates in its own order (``access.drf``)


def serve(door: Door, request: HttpRequest, handler: Callable[[], HttpResponse], *,
          record: Callable[[], AccessRecord],
          authentication: Authentication = Authentication.REQUIRED) -> HttpResponse:
    """Answer one request through ``door``: the handler and its audit entry in one transaction.

    ``record`` makes the request's ``AccessRecord`` afresh for each attempt (the handler adds
    to ``request.access``). ``serve`` must run outside any atomic block (the views are
    ``non_atomic_requests``), or a deadlock cannot be rerun.
    """
    def attempt() -> HttpResponse:
        return _attempt(door, request, handler, record, authentication)

    try:
        response = transient.run_retrying(attempt, logger=door.logger, what=_line(door, request))
    except Exception as error:  # noqa: BLE001 - an access that cannot be audited is refused
        fault = transient.fault_of(error)
        if fault is not None:
            response = _unavailable(door, request, fault, error)
        else:
            log_failure(door.logger, "audit entry could not be written", request, error)
            response = door.render(door.not_audited)
    return door.finish(request, response)


def audited(door: Door, *, record: Callable[[HttpRequest, dict], AccessRecord],
            authentication: Authentication = Authentication.REQUIRED):
    """``serve`` as a view decorator; ``record(request, view_kwargs)`` makes the access record."""
    def decorate(view):
        @transaction.non_atomic_requests  # this mechanism's own transaction is the request's
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            return serve(door, request, lambda: view(request, *args, **kwargs),
                         record=lambda: record(request, kwargs), authentication=authentication)

        return wrapped

    return decorate


def _attempt(door: Door, request: HttpRequest, handler, record, authentication) -> HttpResponse:
    """One run of the request and its audit entry in one transaction; a rerun starts afresh.

    The body stays readable (``request.body`` is kept), and what an earlier attempt noted
    about the access (its writes, the access context) is dropped with its rollback.
    """
    request.access = record()
    request.__dict__.pop("access_context", None)
    with transaction.atomic():
        response = _answer(door, request, handler, authentication)
        write_audit(request, request.access, response)
    return response


def _answer(door: Door, request: HttpRequest, handler, authentication: Authentication) -> HttpResponse:
    """The handler on a savepoint: a refusal or a failure keeps nothing it did and still answers."""
    try:
        door.prepare(request)
        if authentication is Authentication.REQUIRED or (
                authentication is Authentication.IF_SENT and "Authorization" in request.headers):
            authenticate(request)
        with transaction.atomic():
            return handler()
    except Unapplied as unapplied:
        return unapplied.response
    except Refusal as refusal:
        return door.render(refusal)
    except RequestDataTooBig:
        return door.render(door.too_large)
    except Exception as error:  # noqa: BLE001 - the one place that must answer no matter what
        if transient.fault_of(error) is not None:
            raise  # the whole transaction goes: serve reruns it or answers 503
        log_failure(door.logger, f"{door.name} request failed", request, error)
        return door.render(door.failed)


def _unavailable(door: Door, request: HttpRequest, fault: transient.Fault, error: Exception) -> HttpResponse:
    """The 503, logged once; audited in a transaction of its own when the database is up."""
    response = door.render(door.unavailable(fault))
    transient.refusal_finish(response, logger=door.logger, what=_line(door, request), fault=fault,
                             error=error, audit=lambda: write_audit(request, request.access, response))
    return response


def _line(door: Door, request: HttpRequest) -> str:
    return f"{door.name} {request.method} {request.path}"


def log_failure(logger: logging.Logger, what: str, request: HttpRequest, error: Exception) -> None:
    """The error's type at ERROR; the traceback (whose messages may quote values) only at DEBUG."""
    logger.error("%s: %s %s (%s)", what, request.method, request.path, type(error).__name__)
    logger.debug("%s: traceback", what, exc_info=error)


# --- who is calling ---------------------------------------------------------------------------

def authenticate(request: HttpRequest) -> None:
    """An OAuth2 bearer token (SMART scopes) or an admin session (role rules only) is required.

    Sets ``request.user``, ``request.smart_scopes`` (None for a session) and
    ``request.oauth_client_id``; a client-credentials token acts as its application's owner.
    """
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        if request.user.is_authenticated and request.user.is_staff:
            request.smart_scopes, request.oauth_client_id = None, None
            return
        raise Refusal(401, "login", "Authentication required (Authorization: Bearer <token>)",
                      headers={"WWW-Authenticate": 'Bearer realm="fhir"'})
    token = access_token_lookup(value.strip())
    user = token and (token.user or (token.application.user if token.application else None))
    if token is None or user is None or not user.is_active:
        raise Refusal(401, "login", "The access token is invalid, expired or revoked",
                      headers={"WWW-Authenticate": 'Bearer realm="fhir", error="invalid_token"'})
    request.user = user
    request.smart_scopes = parse_scopes(token.scope)
    request.oauth_client_id = token.application.client_id if token.application else None


def access_context(request: HttpRequest) -> policy.AccessContext:
    """The caller's access context, built once per request; a declared emergency is written
    into the audit record."""
    ctx = getattr(request, "access_context", None)
    if ctx is None:
        ctx = request.access_context = policy.AccessContext.from_request(request)
        if ctx.break_glass:
            request.access.purpose_of_use = "ETREAT"
            request.access.break_glass_reason = ctx.break_glass_reason
    return ctx
