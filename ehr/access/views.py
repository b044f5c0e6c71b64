"""``GET /.well-known/smart-configuration`` (also under ``/fhir/``): public, no login."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from .smart import smart_configuration


@require_GET
def smart_configuration_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(smart_configuration(request.build_absolute_uri("/").rstrip("/")))
