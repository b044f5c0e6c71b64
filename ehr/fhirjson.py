"""Lossless handling of FHIR JSON text: split an object into its top-level members, verbatim.

Re-serializing a parsed resource changes what the client sent (``1.50`` becomes ``1.5``,
instants and base64 get reformatted by models). The server only ever changes top-level
members (``id``, ``meta``) or picks some of them (``_elements``, ``_summary``), so it works
on the raw text of each member and never re-serializes the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

import numpy as np


def _no_constant(name: str):
    raise FhirJsonError(f"invalid JSON: {name} is not a JSON value")


MAX_EXPONENT = 999_999  # Python's decimal context: arithmetic beyond it raises Overflow


def _decimal(text: str) -> Decimal:
    """A JSON number, exact; FHIR decimals have no range, but one past 1e±999999 is refused."""
    try:
        value = Decimal(text)
    except ArithmeticError:  # an exponent beyond what Decimal can even hold
        value = None
    if value is None or not -MAX_EXPONENT <= value.adjusted() <= MAX_EXPONENT:
        raise FhirJsonError("invalid JSON: a number beyond 1e999999 in magnitude or precision")
    return value


def _integer(text: str) -> int | Decimal:
    """Python refuses to convert integers of more than 4,300 digits (a ValueError mid-parse);
    FHIR decimals may be that long, so those are kept exact as ``Decimal``."""
    return int(text) if len(text) <= 4000 else _decimal(text)


# NaN and Infinity are Python's extensions, not JSON (and no FHIR decimal).
_decoder = json.JSONDecoder(parse_float=_decimal, parse_int=_integer, parse_constant=_no_constant)
_WHITESPACE = " \t\n\r"


class FhirJsonError(ValueError):
    """The text is not a JSON object (the message says where it stopped making sense)."""


class FhirJsonLimitError(FhirJsonError):
    """The text is beyond the reader's bounds: nested too deep, or too many values (``too_large``)."""

    def __init__(self, message: str, *, too_large: bool) -> None:
        super().__init__(message)
        self.too_large = too_large


@dataclass
class Limits:
    """Bounds every text is held to before it is parsed (set from settings by ``EhrConfig``)."""

    max_depth: int = 100
    max_values: int = 2_000_000


LIMITS = Limits()


def configure(*, max_depth: int, max_values: int) -> None:
    LIMITS.max_depth, LIMITS.max_values = max_depth, max_values


def check_bounds(text: str | bytes) -> None:
    """Refuse JSON nested deeper than ``LIMITS.max_depth`` or with more than ``max_values`` values.

    The decoders here recurse (in C) once per nesting level; under a high recursion limit
    (web3 raises it to 100,000) a 100k-deep body overflows the C stack and kills the worker,
    and a wide one costs gigabytes of objects. So every reader calls this first: it never
    recurses and works at C speed (bytes operations, numpy), about 10 ms per MiB.
    """
    if _small(text):
        return
    depth, values = _shape(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    if depth > LIMITS.max_depth:
        raise FhirJsonLimitError(f"JSON nested deeper than {LIMITS.max_depth} levels", too_large=False)
    if values > LIMITS.max_values:
        raise FhirJsonLimitError(f"JSON with more than {LIMITS.max_values} values", too_large=True)


def _small(text: str | bytes) -> bool:
    """Most resources: so few brackets and commas that no bound can be reached (no scan needed)."""
    opening = text.count("[" if isinstance(text, str) else b"[") + text.count("{" if isinstance(text, str) else b"{")
    commas = text.count("," if isinstance(text, str) else b",")
    return opening <= LIMITS.max_depth and opening + commas < LIMITS.max_values


_STRUCTURAL = b'"[]{},'
_OTHER_BYTES = bytes(b for b in range(256) if b not in _STRUCTURAL)
_CHUNK = 1 << 22
_QUOTE, _COMMA = ord('"'), ord(",")
_DELTA = np.zeros(256, dtype=np.int8)
_DELTA[[ord("["), ord("{")]] = 1
_DELTA[[ord("]"), ord("}")]] = -1


def _shape(data: bytes) -> tuple[int, int]:
    """(deepest nesting, values) of JSON text, stopping as soon as a bound is passed.

    Escaped backslashes and quotes are dropped, then every byte but quotes, brackets and
    commas (UTF-8 continuation bytes are never ASCII), then empty strings; what is left is
    scanned in chunks: a byte is inside a string when an odd number of quotes precede it.
    Invalid JSON may be over-counted, never under-counted before the point where a decoder
    would stop.
    """
    data = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _OTHER_BYTES).replace(b'""', b"")
    codes = np.frombuffer(data, dtype=np.uint8)
    depth = level = values = inside = 0
    for start in range(0, len(codes), _CHUNK):
        chunk = codes[start:start + _CHUNK]
        quotes = chunk == _QUOTE
        seen = np.cumsum(quotes, dtype=np.int64)
        kept = chunk[~quotes & (((seen + inside) & 1) == 0)]
        inside = (inside + int(seen[-1])) & 1
        deltas = _DELTA[kept]
        if len(deltas):
            levels = np.cumsum(deltas, dtype=np.int64) + level
            depth, level = max(depth, int(levels.max())), int(levels[-1])
        values += int(np.count_nonzero(kept == _COMMA)) + int(np.count_nonzero(deltas == 1))
        if depth > LIMITS.max_depth or values >= LIMITS.max_values:
            break
    return depth, values + 1


def measure(value, *, limit: int) -> tuple[int, int]:
    """(depth, values) of a parsed JSON value, as ``check_bounds`` counts them; a stack walk
    (no recursion) that stops once more than ``limit`` values are seen."""
    depth = values = 0
    stack = [(value, 1)]
    while stack and values <= limit:
        node, level = stack.pop()
        values += 1
        if isinstance(node, dict | list):
            depth = max(depth, level)
            stack.extend((item, level + 1) for item in (node.values() if isinstance(node, dict) else node))
    return depth, values


def loads(text: str) -> dict:
    """Parse with decimals kept exact (FHIR decimals carry their precision)."""
    check_bounds(text)
    try:
        value = _decoder.decode(text)
    except json.JSONDecodeError as error:
        raise FhirJsonError(f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    if not isinstance(value, dict):
        raise FhirJsonError("a FHIR resource must be a JSON object")
    return value


def value(raw: str):
    """Parse one raw JSON value (a member's text from ``split_members``)."""
    check_bounds(raw)
    try:
        return _decoder.decode(raw)
    except json.JSONDecodeError as error:
        raise FhirJsonError(f"invalid JSON: {error.msg} at offset {error.pos}") from None


def split_members(text: str) -> list[tuple[str, str]]:
    """The top-level members of a JSON object as (name, raw value text), in order."""
    return list(_items(text, "{", "}", _member, "a FHIR resource must be a JSON object"))


def split_array(text: str, *, limit: int | None = None) -> list[str]:
    """The raw texts of a JSON array's elements (bundle entries), verbatim.

    More than ``limit`` elements stop the split there (``FhirJsonLimitError``, too large).
    """
    items = []
    for item in _items(text, "[", "]", _raw_value, "expected a JSON array"):
        if limit is not None and len(items) == limit:
            raise FhirJsonLimitError(f"more than {limit} entries", too_large=True)
        items.append(item)
    return items


def _items(text: str, opening: str, closing: str, read_item, not_a_container: str):
    """Walk a container's items, each read by ``read_item(text, index) -> (item, end)``."""
    check_bounds(text)
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
