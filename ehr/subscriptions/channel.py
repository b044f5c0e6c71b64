"""What a Subscription resource asks for, checked at write time (a bad one is a 422)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from ehr.fhir import FhirError, issue
from ehr.search import SearchError, parse_search

from .receivers import ReceiverRefused, header_pairs, receiver_check

PAYLOADS = ("", "application/fhir+json", "application/json")


@dataclass(frozen=True)
class Channel:
    status: str
    criteria_type: str
    criteria: str
    endpoint: str
    payload: str
    headers: list[str]
    error: str


def channel_of(subscription: dict) -> Channel:
    """The rest-hook channel of a Subscription resource, or a 422 naming the element."""
    channel = subscription.get("channel") or {}
    if channel.get("type") != "rest-hook":
        raise _invalid("Subscription.channel.type", "Only the rest-hook channel is supported")
    criteria = subscription.get("criteria") or ""
    criteria_type, _, query = criteria.partition("?")
    try:
        parse_search(criteria_type, criteria_params(query), strict=True)
    except SearchError as error:
        raise _invalid("Subscription.criteria", f"The criteria are not a search this server runs: "
                                                f"{error.message}") from None
    payload = channel.get("payload") or ""
    if payload not in PAYLOADS:
        raise _invalid("Subscription.channel.payload", "The payload is application/fhir+json or empty")
    headers = list(channel.get("header") or [])
    try:
        header_pairs(headers)
    except ValueError as error:
        raise _invalid("Subscription.channel.header", str(error)) from None
    endpoint = channel.get("endpoint") or ""
    try:
        receiver_check(endpoint)
    except ReceiverRefused as refused:
        raise _invalid("Subscription.channel.endpoint", f"The endpoint is refused: {refused}") from None
    return Channel(status=subscription.get("status") or "", criteria_type=criteria_type, criteria=query,
                   endpoint=endpoint, payload=payload, headers=headers, error=subscription.get("error") or "")


def criteria_params(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def _invalid(expression: str, message: str) -> FhirError:
    return FhirError(422, "processing", message, issues=[issue("error", "processing", message, expression)])
