"""Top-level routes: health, admin and the OpenAPI schema; each app adds its own door."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.health import healthz
from ehr.access.views import smart_configuration_view
from ehr.api.views import system as fhir_base

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="admin/login.html",
                                                         extra_context={"site_header": "Carrack"})),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path(".well-known/smart-configuration", smart_configuration_view, name="smart-configuration"),
    path("fhir/.well-known/smart-configuration", smart_configuration_view),
    path("fhir", fhir_base),
    path("fhir/", include("ehr.api.urls")),
    path("dicomweb/", include("imaging.api.urls")),
    path("api/ledger/", include("ledger.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/schema/swagger-ui/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]
