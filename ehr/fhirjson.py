"""Lossless handling of FHIR JSON text: split an object into its top-level members, verbatim.

Re-serializing a parsed resource changes what the client sent (``1.50`` becomes ``1.5``,
instants and base64 get reformatted by models). The server only ever changes top-level
members (``id``, ``meta``) or picks some of them (``_elements``, ``_summary``), so it works
on the raw text of each member and never re-serializes the rest.
"""

from __future__ import annotations

import json
from decimal import Decimal

_decoder = json.JSONDecoder(parse_float=Decimal)
_WHITESPACE = " \t\n\r"


class FhirJsonError(ValueError):
    """The text is not a JSON object (the message says where it stopped making sense)."""


def loads(text: str) -> dict:
    """Parse with decimals kept exact (FHIR decimals carry their precision)."""
    try:
        value = _decoder.decode(text)
    except json.JSONDecodeError as error:
        raise FhirJsonError(f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    if not isinstance(value, dict):
        raise FhirJsonError("a FHIR resource must be a JSON object")
    return value


def value(raw: str):
    """Parse one raw JSON value (a member's text from ``split_members``)."""
    try:
        return _decoder.decode(raw)
    except json.JSONDecodeError as error:
        raise FhirJsonError(f"invalid JSON: {error.msg} at offset {error.pos}") from None


def split_members(text: str) -> list[tuple[str, str]]:
    """The top-level members of a JSON object as (name, raw value text), in order."""
    return list(_items(text, "{", "}", _member, "a FHIR resource must be a JSON object"))


def split_array(text: str) -> list[str]:
    """The raw texts of a JSON array's elements (bundle entries), verbatim."""
    return list(_items(text, "[", "]", _raw_value, "expected a JSON array"))


def _items(text: str, opening: str, closing: str, read_item, not_a_container: str):
    """Walk a container's items, each read by ``read_item(text, index) -> (item, end)``."""
    index = _skip(text, 0)
    if not text.startswith(opening, index):
        raise FhirJsonError(not_a_container)
    index = _skip(text, index + 1)
    if text.startswith(closing, index):
        return
    while True:
        item, end = read_item(text, index)
        yield item
        index = _skip(text, end)
        if text.startswith(",", index):
            index = _skip(text, index + 1)
        elif text.startswith(closing, index):
            return
        else:
            raise FhirJsonError(f"expected ',' or '{closing}' at offset {index}")


def _member(text: str, index: int) -> tuple[tuple[str, str], int]:
    if not text.startswith('"', index):
        raise FhirJsonError(f"expected a member name at offset {index}")
    try:
        name, index = json.decoder.scanstring(text, index + 1)
    except json.JSONDecodeError as error:
        raise FhirJsonError(f"invalid JSON: {error.msg} at offset {error.pos}") from None
    index = _skip(text, index)
    if not text.startswith(":", index):
        raise FhirJsonError(f"expected ':' at offset {index}")
    raw, end = _raw_value(text, _skip(text, index + 1))
    return (name, raw), end


def _raw_value(text: str, start: int) -> tuple[str, int]:
    try:
        _, end = _decoder.raw_decode(text, start)
    except json.JSONDecodeError as error:
        raise FhirJsonError(f"invalid JSON: {error.msg} at offset {error.pos}") from None
    return text[start:end], end


def join_members(members: list[tuple[str, str]]) -> str:
    """The inverse of ``split_members``: raw member texts assembled into one object."""
    return "{" + ",".join(f"{json.dumps(name)}:{raw}" for name, raw in members) + "}"


def dumps(value) -> str:
    """Compact JSON for values the server builds or patches; ``Decimal`` is written exactly."""
    return "".join(_encode(value))


def _encode(value):
    if isinstance(value, str):
        yield json.dumps(value, ensure_ascii=False)
    elif isinstance(value, dict):
        yield "{"
        for position, (key, item) in enumerate(value.items()):
            yield ("," if position else "") + json.dumps(str(key), ensure_ascii=False) + ":"
            yield from _encode(item)
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "["
        for position, item in enumerate(value):
            if position:
                yield ","
            yield from _encode(item)
        yield "]"
    elif isinstance(value, Decimal):
        yield str(value) if value.is_finite() else "null"
    else:  # bool, None, int, float
        yield json.dumps(value)


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index
