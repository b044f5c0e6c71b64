"""multipart/related bodies (RFC 2387) as DICOMweb sends and expects them."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator

from django.utils.http import parse_header_parameters

from .http import DicomwebError


def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    main, params = parse_header_parameters(content_type or "")
    return main.lower(), {key.lower(): value for key, value in params.items()}


def parse_related(body: bytes, content_type: str) -> Iterator[tuple[dict[str, str], bytes]]:
    """Yield (headers, content) of each part; 400 when the body is not a multipart message."""
    main, params = media_type(content_type)
    boundary = params.get("boundary")
    if main != "multipart/related" or not boundary:
        raise DicomwebError(415, 'Send multipart/related; type="application/dicom" with a boundary')
    if len(boundary) > 70 or not boundary.isascii():  # RFC 2046 5.1.1: 1 to 70 ASCII characters
        raise DicomwebError(400, "The multipart boundary must be 1 to 70 ASCII characters")
    delimiter = b"--" + boundary.encode("ascii")
    start = body.find(delimiter)
    if start < 0:
        raise DicomwebError(400, "The multipart body has no boundary delimiter")
    position = start + len(delimiter)
    while True:
        if body[position:position + 2] == b"--":
            return
        header_start = body.find(b"\r\n", position) + 2
        header_end = body.find(b"\r\n\r\n", header_start - 2)
        end = body.find(b"\r\n" + delimiter, max(header_end, 0))
        if header_start < 2 or header_end < 0 or end < 0:
            raise DicomwebError(400, "The multipart body is truncated (no closing delimiter)")
        headers = _headers(body[header_start:header_end])
        yield headers, body[header_end + 4:end]
        position = end + 2 + len(delimiter)


def _headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def related_body(parts: Iterable[tuple[str, bytes]], part_type: str) -> tuple[Iterator[bytes], str]:
    """A multipart/related stream of (content type, bytes) parts and its Content-Type value."""
    boundary = uuid.uuid4().hex

    def chunks() -> Iterator[bytes]:
        for content_type, data in parts:
            yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
            yield data
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return chunks(), f'multipart/related; type="{part_type}"; boundary={boundary}'
