"""Cross-cutting HTTP rules: no caching of personal data, a limit on failed authentications.

Both apply to every door at once, so no single view can forget them.
"""

from __future__ import annotations

import base64
import binascii
import json

from django.http import HttpRequest, HttpResponse, JsonResponse

from access import throttle

# Answers under these prefixes may carry personal data or credentials: never stored by a
# browser or a proxy (unless the view chose its own Cache-Control).
NO_STORE_PREFIXES = ("/fhir", "/dicomweb", "/api/", "/o/")
# RFC 6749 5.1: token answers also carry Pragma: no-cache for HTTP/1.0 caches.
TOKEN_PATHS = ("/o/token/", "/o/introspect/")
OAUTH_DOORS = ("/o/token/", "/o/revoke_token/", "/o/introspect/")
LOGIN_DOORS = ("/admin/login/", "/accounts/login/")
FAILED_OAUTH_ERRORS = {"invalid_client", "invalid_grant"}


def no_store(get_response):
    """``Cache-Control: no-store`` on the doors that answer with records or tokens."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        if request.path.startswith(NO_STORE_PREFIXES):
            if not response.has_header("Cache-Control"):
                response["Cache-Control"] = "no-store"
            if request.path in TOKEN_PATHS:
                response["Pragma"] = "no-cache"
        return response

    return middleware


def auth_throttle(get_response):
    """Failed logins and client authentications are counted; past the limit the answer is 429.

    A failure is an OAuth2 answer ``invalid_client``/``invalid_grant`` (or 401/403) from
    the token, revocation or introspection endpoint, or a login form shown again after a POST.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        door = _door(request)
        if door is None:
            return get_response(request)
        keys = throttle.keys_for(address=request.META.get("REMOTE_ADDR", ""),
                                 accounts=_accounts(request, door))
        wait = throttle.retry_after(keys)
        if wait is not None:
            return _too_many(wait)
        response = get_response(request)
        if _failed(door, response):
            throttle.failure_record(keys)
        return response

    return middleware


def _door(request: HttpRequest) -> str | None:
    if request.method != "POST":
        return None
    if request.path in OAUTH_DOORS:
        return "oauth"
    return "login" if request.path in LOGIN_DOORS else None


def _accounts(request: HttpRequest, door: str) -> list[str]:
    if door == "login":
        return [f"user:{request.POST.get('username', '')}"]
    accounts = [f"client:{_client_id(request)}"]
    if request.POST.get("grant_type") == "password":
        accounts.append(f"user:{request.POST.get('username', '')}")
    return accounts


def _client_id(request: HttpRequest) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value, validate=True).decode("utf-8").partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return request.POST.get("client_id", "")


def _failed(door: str, response: HttpResponse) -> bool:
    if door == "login":
        return response.status_code == 200  # the form again: wrong username or password
    if response.status_code in (401, 403):
        return True
    if response.status_code != 400:
        return False
    try:
        return json.loads(response.content).get("error") in FAILED_OAUTH_ERRORS
    except (ValueError, AttributeError):
        return False


def _too_many(wait: int) -> JsonResponse:
    response = JsonResponse({"error": "too_many_requests",
                             "error_description": "Too many failed attempts; try again later"},
                            status=429)
    response["Retry-After"] = str(wait)
    return response
