"""The OAuth2 doors Carrack adds to or narrows in django-oauth-toolkit, and SMART discovery.

``/.well-known/smart-configuration`` (also under ``/fhir/``) is public. ``/o/authorize/``
refuses an ``aud`` that is not this server's FHIR base (SMART App Launch: a code, and so a
token, is only ever issued for this server). ``/o/introspect/`` answers only the token's own
client or a configured resource server.
"""

from __future__ import annotations

import hashlib

from django import forms
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from oauth2_provider.compat import login_not_required
from oauth2_provider.exceptions import OAuthToolkitError
from oauth2_provider.forms import AllowForm
from oauth2_provider.models import AccessToken, Application
from oauth2_provider.views import AuthorizationView, IntrospectTokenView
from oauthlib.common import Request as OauthlibRequest
from oauthlib.oauth2.rfc6749.errors import InvalidRequestError

from .smart import audience_matches, fhir_base_url, smart_configuration


@require_GET
def smart_configuration_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(smart_configuration(request.build_absolute_uri("/").rstrip("/")))


class SmartAllowForm(AllowForm):
    """DOT's consent form, carrying ``aud`` from the GET to the POST like its other fields."""

    aud = forms.CharField(widget=forms.HiddenInput(), required=False)


def audience_error(request: HttpRequest, aud: str, *, redirect_uri: str,
                   state: str | None) -> OAuthToolkitError | None:
    """``invalid_request`` (redirected to the client) when ``aud`` is missing or not ours."""
    if audience_matches(aud, fhir_base_url(request)):
        return None
    description = "aud is required" if not aud else "aud is not this server's FHIR base URL"
    return OAuthToolkitError(error=InvalidRequestError(description=description, state=state),
                             redirect_uri=redirect_uri)


class SmartAuthorizationView(AuthorizationView):
    """DOT's authorization endpoint plus the SMART audience check, on the GET and the POST."""

    form_class = SmartAllowForm

    def validate_authorization_request(self, request):
        """Runs after DOT validated client and redirect URI, so the error may be redirected."""
        scopes, credentials = super().validate_authorization_request(request)
        error = audience_error(request, request.GET.get("aud", ""),
                               redirect_uri=credentials["redirect_uri"], state=credentials.get("state"))
        if error is not None:
            raise error
        return scopes, credentials

    def get_initial(self):
        return {**super().get_initial(), "aud": self.request.GET.get("aud", "")}

    def form_valid(self, form):
        data = form.cleaned_data
        application = Application.objects.filter(client_id=data.get("client_id")).first()
        # An unregistered redirect URI is left to DOT, which refuses it without redirecting.
        if application is not None and application.redirect_uri_allowed(data.get("redirect_uri")):
            error = audience_error(self.request, data.get("aud", ""),
                                   redirect_uri=data["redirect_uri"], state=data.get("state"))
            if error is not None:
                return self.error_response(error, application)
        return super().form_valid(form)


@method_decorator(csrf_exempt, name="dispatch")
@method_decorator(login_not_required, name="dispatch")
class SmartIntrospectView(IntrospectTokenView):
    """RFC 7662 introspection for an authenticated confidential client, POST only.

    A client learns about its own tokens; only the clients in ``OAUTH2_INTROSPECTION_CLIENTS``
    (resource servers) about any token. Any other token is ``{"active": false}``, exactly as
    an unknown one, so the endpoint reveals nothing about other clients' tokens.
    """

    http_method_names = ["post"]

    def dispatch(self, request, *args, **kwargs):
        client = self.calling_client(request)
        if client is None:
            return JsonResponse({"error": "invalid_client"}, status=401,
                                headers={"WWW-Authenticate": 'Basic realm="introspect"'})
        if request.method != "POST":
            return self.http_method_not_allowed(request)
        token_value = request.POST.get("token")
        if token_value and not introspection_allowed(client, token_value):
            return JsonResponse({"active": False})
        return self.get_token_response(token_value)

    def calling_client(self, request) -> Application | None:
        """The client that authenticated with its secret (Basic or body); never a bearer token."""
        core = self.get_oauthlib_core()
        # DOT's OAuthLibCore.authenticate_client, keeping the client it found
        uri, http_method, body, headers = core._extract_params(request)
        oauth_request = OauthlibRequest(uri, http_method, body, headers)
        if not core.server.request_validator.authenticate_client(oauth_request):
            return None
        return oauth_request.client


def introspection_allowed(client: Application, token_value: str) -> bool:
    if client.client_id in settings.OAUTH2_INTROSPECTION_CLIENTS:
        return True
    checksum = hashlib.sha256(token_value.encode("utf-8")).hexdigest()
    return AccessToken.objects.filter(token_checksum=checksum, application=client).exists()
