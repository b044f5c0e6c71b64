"""DRF views on the audited endpoint: ``/api/…`` answers as the other doors, in JSON problems.

``AuditedAPIView`` runs DRF's whole dispatch as the handler of ``access.endpoint.serve``, so
an ``/api/`` view is authenticated as on ``/fhir/`` (the bearer token from the Authorization
header only, or an admin session; a token in the URL, which proxies and servers log, is
refused), audited once per request, allowed or refused, in the request's own transaction,
and answers every error in the fixed shape ``{"error": {"code", "message"}}``: DRF's own,
Django's 404, the shared refusals (``Refusal``), 500 and 503 alike.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import endpoint, policy, transient
from .audit import AccessRecord
from .errors import Refusal

# A shared refusal's code (a FHIR issue type) → this door's error code.
ERROR_CODES = {400: "bad_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found"}


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    """The JSON problem every ``/api/`` error is, for the OpenAPI schema."""

    error = ErrorBodySerializer()


# The error answers every audited API view may give, for ``extend_schema(responses=...)``.
ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer,
          406: ErrorSerializer}


def error_response(http_status: int, code: str, message: str, **extra) -> Response:
    return Response({"error": {"code": code, "message": message}, **extra}, status=http_status)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's own errors, Django's 404 and the shared refusals, in the fixed error shape."""
    if isinstance(exc, Refusal):
        response = error_response(exc.status, ERROR_CODES.get(exc.status, "error"), exc.message)
        for name, value in exc.headers.items():
            response[name] = value
        return response
    if isinstance(exc, Http404):
        return error_response(status.HTTP_404_NOT_FOUND, "not_found", "not found")
    if not isinstance(exc, exceptions.APIException):
        return None
    code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
    response = error_response(exc.status_code, str(code), str(exc.detail))
    if auth_header := getattr(exc, "auth_header", None):
        response["WWW-Authenticate"] = auth_header
    return response


class BadQuery(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "bad_request"
    default_detail = "bad query parameter"


class FormatNegotiation(DefaultContentNegotiation):
    """``?format=`` must name one of the view's renderers: 400, where DRF would raise a bare
    404 (a 500 here before); an Accept header no renderer satisfies stays DRF's 406."""

    def select_renderer(self, request, renderers, format_suffix=None):
        wanted = format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE)
        formats = sorted(renderer.format for renderer in renderers)
        if wanted is not None and wanted not in formats:
            raise BadQuery(f"format must be one of: {', '.join(formats)}", "bad_format")
        return super().select_renderer(request, renderers, format_suffix)


class ApiDoor(endpoint.Door):
    """``/api/``: what escapes DRF (a failure, an outage, an unaudited access) as a JSON problem."""

    name = "api"
    failed = Refusal(500, "internal", "internal error; nothing was done")
    not_audited = Refusal(500, "not_audited", "the access could not be audited")
    too_large = Refusal(413, "too_large", "the request body is too large")

    def render(self, refusal: Refusal) -> HttpResponse:
        response = JsonResponse({"error": {"code": refusal.code, "message": refusal.message}},
                                status=refusal.status)
        for name, value in refusal.headers.items():
            response[name] = value
        return response

    def unavailable(self, fault: transient.Fault) -> Refusal:
        return Refusal(503, "unavailable", fault.value[0].lower() + fault.value[1:])


class AuditedAPIView(APIView):
    """Authentication and scopes as on ``/fhir/``, one audit entry per request, JSON errors.

    ``self.access`` is the request's ``AccessRecord``: a view names what it read in it.
    """

    door: endpoint.Door = ApiDoor(logging.getLogger(__name__))
    interaction = "read"  # the FHIR restful-interaction code of the audit entry
    authentication_classes: list = []  # access.endpoint.authenticate, in perform_authentication
    permission_classes: list = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = FormatNegotiation
    query_parameters = frozenset({"format"})  # a view's own parameters come on top

    @classmethod
    def as_view(cls, **initkwargs):
        """Outside ATOMIC_REQUESTS: ``dispatch`` opens the request's transaction itself."""
        return transaction.non_atomic_requests(super().as_view(**initkwargs))

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        """DRF's dispatch as the handler of the audited endpoint (``access.endpoint.serve``).

        An error DRF answered itself (``response.exception``) keeps none of the view's writes.
        """
        def handler() -> HttpResponse:
            response = super(AuditedAPIView, self).dispatch(request, *args, **kwargs)
            if getattr(response, "exception", False):
                raise endpoint.Unapplied(response)
            return response

        return endpoint.serve(self.door, request, handler, record=self.access_record,
                              authentication=endpoint.Authentication.BY_HANDLER)

    def access_record(self) -> AccessRecord:
        """A fresh record for each attempt of the request (a deadlock reruns it)."""
        self.access = AccessRecord(interaction=self.interaction)
        return self.access

    def initial(self, request: Request, *args, **kwargs) -> None:
        """Query parameters first: a token in the URL is refused, never read."""
        unknown = set(request.query_params) - self.query_parameters
        if "access_token" in unknown:
            raise BadQuery("send the access token in the Authorization header, not in the URL",
                           "token_in_url")
        if unknown:
            raise BadQuery(f"unknown query parameter; this endpoint takes only: "
                           f"{', '.join(sorted(self.query_parameters))}", "unknown_parameter")
        super().initial(request, *args, **kwargs)

    def perform_authentication(self, request: Request) -> None:
        """The bearer token from the Authorization header only (or an admin session), as on /fhir/."""
        endpoint.authenticate(request._request)
        request.user = request._request.user

    def get_exception_handler(self):
        return api_exception_handler

    def reader(self, request: Request, resource_type: str) -> policy.AccessContext:
        """The caller's access context; 403, whatever the id, without the scope to read ``resource_type``."""
        ctx = endpoint.access_context(request._request)
        if not policy.scope_allows(ctx, resource_type, "read"):
            raise Refusal(403, "forbidden", f"The token's scopes do not allow read on {resource_type}")
        return ctx
