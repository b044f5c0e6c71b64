"""Where a notification may go, and the one HTTP client that sends it.

A Subscription names a URL; the node refuses to become a way into its own network. The
scheme must be ``https`` (``http`` where ``SUBSCRIPTION_ALLOW_HTTP``); every address the host
resolves to is checked, and the connection goes to a checked address (a DNS answer that
changes between check and send cannot redirect it). Link-local and cloud metadata addresses
are never allowed; loopback and private ranges only where a setting allows them. Redirects
are not followed, timeouts are short and at most ``SUBSCRIPTION_MAX_RESPONSE_BYTES`` of an
answer are read.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

# Metadata services outside the link-local ranges (AWS IPv6, Alibaba, Oracle), never allowed.
METADATA_ADDRESSES = {ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192")}
# Headers the server writes itself; a Subscription may not set them.
RESERVED_HEADERS = {"host", "content-length", "content-type", "transfer-encoding", "connection"}


class ReceiverRefused(Exception):
    """The endpoint may not be called; the message names why (no address of a patient in it)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str


def receiver_check(url: str) -> Target:
    """The endpoint's checked target, or ``ReceiverRefused``."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ReceiverRefused("the endpoint must be an absolute https URL")
    if parts.scheme == "http" and not settings.SUBSCRIPTION_ALLOW_HTTP:
        raise ReceiverRefused("the endpoint must use https")
    if parts.username or parts.password:
        raise ReceiverRefused("the endpoint may not carry credentials (use channel.header)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError, UnicodeError):
        raise ReceiverRefused("the endpoint's host does not resolve") from None
    addresses = [info[4][0] for info in infos]
    for address in addresses:
        _check_address(ipaddress.ip_address(address.split("%")[0]))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, path, addresses[0])


def _check_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address.is_link_local or address in METADATA_ADDRESSES:
        raise ReceiverRefused("the endpoint resolves to a link-local or metadata address")
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        raise ReceiverRefused("the endpoint resolves to an address that is not a host")
    if address.is_loopback:
        if not settings.SUBSCRIPTION_ALLOW_LOOPBACK:
            raise ReceiverRefused("the endpoint resolves to a loopback address")
        return
    if (address.is_private or not address.is_global) and not settings.SUBSCRIPTION_ALLOW_PRIVATE:
        raise ReceiverRefused("the endpoint resolves to a private address")


def header_pairs(headers: list[str]) -> list[tuple[str, str]]:
    """``channel.header`` entries (``Name: value``) as pairs; ``ValueError`` names a bad one."""
    pairs = []
    for position, header in enumerate(headers):
        name, colon, value = header.partition(":")
        name = name.strip()
        if not colon or not name or any(c in header for c in "\r\n\0") or not name.isascii() or " " in name:
            raise ValueError(f"channel.header[{position}] must be 'Name: value'")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"channel.header[{position}] sets {name}, which the server writes")
        pairs.append((name, value.strip()))
    return pairs


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no answer (refused, unreachable, timed out)
    reason: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def receiver_post(url: str, *, headers: list[str], body: bytes | None, content_type: str | None) -> Answer:
    """POST once to a checked target; never raises for the receiver's faults."""
    try:
        target = receiver_check(url)
    except ReceiverRefused as refused:
        return Answer(0, str(refused))
    timeout = settings.SUBSCRIPTION_TIMEOUT_SECONDS
    connection = _connection(target, timeout)
    try:
        request_headers = dict(header_pairs(headers))
        if body is not None:
            request_headers["Content-Type"] = content_type or "application/fhir+json"
        connection.request("POST", target.path, body=body or b"", headers=request_headers)
        response = connection.getresponse()
        response.read(settings.SUBSCRIPTION_MAX_RESPONSE_BYTES)
        return Answer(response.status, f"HTTP {response.status}")
    except (OSError, http.client.HTTPException, ValueError) as error:
        return Answer(0, f"receiver unreachable ({type(error).__name__})")
    finally:
        connection.close()


def _connection(target: Target, timeout: float) -> http.client.HTTPConnection:
    """A connection to the checked address, presenting the URL's host (Host header and SNI)."""
    if target.scheme == "http":
        connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
        connection.connect = lambda: setattr(connection, "sock", socket.create_connection(
            (target.address, target.port), timeout))
        return connection
    context = ssl.create_default_context()
    connection = http.client.HTTPSConnection(target.host, target.port, timeout=timeout, context=context)

    def connect() -> None:
        raw = socket.create_connection((target.address, target.port), timeout)
        connection.sock = context.wrap_socket(raw, server_hostname=target.host)

    connection.connect = connect
    return connection
