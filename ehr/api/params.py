"""The FHIR query and body parameters every /fhir/ view reads: methods, paging, _since, form bodies."""

from __future__ import annotations

from urllib.parse import parse_qsl

from django.http import HttpRequest
from django.utils.dateparse import parse_datetime

from ehr.fhir import FhirError

MAX_OFFSET = 2**31 - 1  # PostgreSQL's OFFSET/LIMIT take bigints; anything larger is an error


def allow(request: HttpRequest, *methods: str) -> None:
    if request.method not in methods:
        raise FhirError(405, "not-supported", f"{request.method} is not supported here",
                        headers={"Allow": ", ".join(methods)})


def body_text(request: HttpRequest) -> str:
    try:
        return request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise FhirError(400, "structure", "The body is not UTF-8") from None


def query_params(request: HttpRequest) -> list[tuple[str, str]]:
    """Query parameters in request order, repeats kept (a repeat means AND)."""
    return parse_qsl(request.META.get("QUERY_STRING", ""), keep_blank_values=True)


def post_params(request: HttpRequest) -> list[tuple[str, str]]:
    body = parse_qsl(body_text(request), keep_blank_values=True)
    return query_params(request) + body


def paging(request: HttpRequest, *, default: int) -> tuple[int, int]:
    try:
        offset = int(request.GET.get("_offset", 0))
        count = int(request.GET.get("_count", default))
    except ValueError:
        raise FhirError(400, "invalid", "_count and _offset must be integers") from None
    if not (0 <= offset <= MAX_OFFSET and 0 <= count <= MAX_OFFSET):
        raise FhirError(400, "invalid", f"_count and _offset must be between 0 and {MAX_OFFSET}")
    return offset, count


def since(request: HttpRequest):
    raw = request.GET.get("_since")
    if raw is None:
        return None
    moment = parse_datetime(raw)
    if moment is None or moment.tzinfo is None:
        raise FhirError(400, "invalid", "_since must be an instant with a time zone")
    return moment
