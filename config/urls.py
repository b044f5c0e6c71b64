"""Top-level routes: health, admin and the OpenAPI schema; each app adds its own door.

Only what works is mounted: of django-oauth-toolkit, the four OAuth2 endpoints (no OpenID
Connect while it is off, no device flow, no application or token management pages). Errors
that reach Django's handlers answer JSON or an OperationOutcome (``config.errors``).
"""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.views import serve as static_serve
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from oauth2_provider import views as oauth_views

from config.health import healthz
from ehr.access.views import SmartAuthorizationView, SmartIntrospectView, smart_configuration_view
from ehr.api.views import system as fhir_base

oauth_urlpatterns = [
    path("authorize/", SmartAuthorizationView.as_view(), name="authorize"),
    path("token/", oauth_views.TokenView.as_view(), name="token"),
    path("revoke_token/", oauth_views.RevokeTokenView.as_view(), name="revoke-token"),
    path("introspect/", SmartIntrospectView.as_view(), name="introspect"),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="admin/login.html",
                                                         extra_context={"site_header": "Carrack"})),
    path("o/", include((oauth_urlpatterns, "oauth2_provider"), namespace="oauth2_provider")),
    path(".well-known/smart-configuration", smart_configuration_view, name="smart-configuration"),
    path("fhir/.well-known/smart-configuration", smart_configuration_view),
    path("fhir", fhir_base),
    path("fhir/", include("ehr.api.urls")),
    path("dicomweb/", include("imaging.api.urls")),
    path("api/ledger/", include("ledger.api.urls")),
    path("api/jobs/", include("jobs.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/schema/swagger-ui/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]

if settings.SERVE_STATIC_FILES:  # `make run` only: the admin's CSS without DEBUG (never in production)
    urlpatterns.append(re_path(r"^static/(?P<path>.*)$", static_serve, {"insecure": True}))

handler400 = "config.errors.bad_request"
handler403 = "config.errors.permission_denied"
handler404 = "config.errors.page_not_found"
handler500 = "config.errors.server_error"
