"""Search values as written in a query string, parsed per parameter type (no database).

FHIR escapes ``\\,`` ``\\|`` ``\\$`` and ``\\\\`` inside values; a comma separates OR values and
a bar separates the parts of a token, quantity or reference. Every malformed value raises
``SearchError`` naming the parameter, never anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from ehr.fhir import ID_PATTERN, RELATIVE_REFERENCE
from ehr.indexing import (
    STRING_INDEX_CHARS,
    TOKEN_INDEX_CHARS,
    URI_INDEX_CHARS,
    date_range,
    normalize_string,
)
from ehr.numeric import EXACT, INDEX_MAX_ADJUSTED, INDEX_MIN_EXPONENT, index_decimal

from .errors import SearchError

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MAX_NUMBER_CHARS = 20_000  # a search value's text; the index keeps INDEX_DIGITS significant digits
NUMBER_PATTERN = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class TokenValue:
    """``code`` (any system), ``|code`` (no system), ``system|code`` or ``system|`` (any code)."""

    system: str | None  # None: any system; "": no system
    code: str | None  # None: any code


@dataclass(frozen=True)
class DateValue:
    prefix: str
    low: datetime  # inclusive
    high: datetime  # inclusive


@dataclass(frozen=True)
class NumberValue:
    prefix: str
    value: Decimal
    low: Decimal  # implicit precision range [low, high)
    high: Decimal


@dataclass(frozen=True)
class QuantityValue:
    number: NumberValue
    system: str | None
    code: str | None


@dataclass(frozen=True)
class ReferenceValue:
    """One of: a type and id, an id of any type, or an absolute URL matched as written."""

    target_type: str | None
    target_id: str | None
    url: str | None


def split_escaped(text: str, separator: str) -> list[str]:
    """Split on unescaped ``separator``; escapes are kept for ``unescape`` to remove later."""
    parts, current, index = [], [], 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index:index + 2])
            index += 2
            continue
        if char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    return re.sub(r"\\([,|$\\])", r"\1", text)


def parse_values(kind: str, modifier: str | None, text: str, *, name: str) -> tuple:
    """The OR values of one parameter occurrence, parsed for its type and modifier."""
    if modifier == "missing":
        if text not in ("true", "false"):
            raise SearchError("invalid", f"{name}: :missing takes true or false, not {text!r}")
        return (text == "true",)
    raw_values = split_escaped(text, ",")
    if any(value == "" for value in raw_values):
        raise SearchError("invalid", f"{name}: empty value")
    parser = _PARSERS[kind]
    return tuple(parser(raw, modifier, name) for raw in raw_values)


def _string(raw: str, modifier: str | None, name: str) -> str:
    value = unescape(raw)
    if modifier == "exact":
        return value
    normalized = normalize_string(value)
    if not normalized:
        raise SearchError("invalid", f"{name}: empty value")
    return normalized[:STRING_INDEX_CHARS]  # as indexed: a prefix of long texts


def _uri(raw: str, modifier: str | None, name: str) -> str:
    return unescape(raw)[:URI_INDEX_CHARS]


def _token(raw: str, modifier: str | None, name: str) -> TokenValue | str:
    if modifier == "text":
        return _string(raw, None, name)
    parts = split_escaped(raw, "|")
    if len(parts) == 1:
        return TokenValue(system=None, code=unescape(parts[0])[:TOKEN_INDEX_CHARS])
    if len(parts) != 2 or parts == ["", ""]:
        raise SearchError("invalid", f"{name}: a token is code, |code, system|code or system|")
    system, code = (unescape(part)[:TOKEN_INDEX_CHARS] for part in parts)
    return TokenValue(system=system, code=code or None)


def _date(raw: str, modifier: str | None, name: str) -> DateValue:
    prefix, rest = _prefix(unescape(raw), name)
    try:
        low, high = date_range(rest)
    except (ValueError, TypeError, OverflowError):
        raise SearchError("invalid", f"{name}: {rest!r} is not a FHIR date or dateTime") from None
    return DateValue(prefix=prefix, low=low, high=high)


def _number(raw: str, modifier: str | None, name: str) -> NumberValue:
    prefix, rest = _prefix(unescape(raw), name)
    return number_value(prefix, rest, name)


def number_value(prefix: str, text: str, name: str) -> NumberValue:
    """A number with its implicit range: ``100`` is [99.5, 100.5), ``1.0e2`` is [99.5, 100.5).

    The value is read as the index holds it (``ehr.numeric.index_decimal``), so a value with more
    significant digits than the index keeps is searched at the index's precision and every
    indexed value is found by its own text. The bounds are computed exactly (the default
    context would round a 30-digit value's bounds to 28 digits, past the value itself).
    """
    if len(text) > MAX_NUMBER_CHARS or not NUMBER_PATTERN.fullmatch(text):
        raise SearchError("invalid", f"{name}: {text[:40]!r} is not a number"
                          + (f" (at most {MAX_NUMBER_CHARS} characters)" if len(text) > MAX_NUMBER_CHARS else ""))
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise SearchError("invalid", f"{name}: {text[:40]!r} is not a number") from None
    if value and not INDEX_MIN_EXPONENT <= value.adjusted() <= INDEX_MAX_ADJUSTED:
        # Beyond what PostgreSQL numeric holds: the index holds such values at its bounds.
        raise SearchError("invalid", f"{name}: the number is out of the searchable range "
                                     f"(1e{INDEX_MIN_EXPONENT} to 1e+{INDEX_MAX_ADJUSTED} in magnitude)")
    indexed = index_decimal(value)
    exponent = indexed.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5).scaleb(exponent - 1)
    return NumberValue(prefix=prefix, value=indexed, low=EXACT.subtract(indexed, half),
                       high=EXACT.add(indexed, half))


def _quantity(raw: str, modifier: str | None, name: str) -> QuantityValue:
    parts = split_escaped(raw, "|")
    if len(parts) not in (1, 3):
        raise SearchError("invalid", f"{name}: a quantity is [prefix]number[|system|code]")
    prefix, rest = _prefix(unescape(parts[0]), name)
    number = number_value(prefix, rest, name)
    if len(parts) == 1:
        return QuantityValue(number=number, system=None, code=None)
    system, code = (unescape(part) or None for part in parts[1:])
    return QuantityValue(number=number, system=system, code=code)


def _reference(raw: str, modifier: str | None, name: str) -> ReferenceValue:
    value = unescape(raw)
    relative = RELATIVE_REFERENCE.fullmatch(value)
    if relative:
        return ReferenceValue(target_type=relative.group(1), target_id=relative.group(2), url=None)
    if ID_PATTERN.fullmatch(value):
        return ReferenceValue(target_type=None, target_id=value, url=None)
    if re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:", value):
        return ReferenceValue(target_type=None, target_id=None, url=value)
    raise SearchError("invalid", f"{name}: {value!r} is not an id, Type/id or absolute URL")


def _prefix(text: str, name: str) -> tuple[str, str]:
    if len(text) > 2 and text[:2].isalpha():
        if text[:2] not in PREFIXES:
            raise SearchError("invalid", f"{name}: unknown prefix {text[:2]!r}")
        return text[:2], text[2:]
    return "eq", text


_PARSERS = {
    "string": _string,
    "token": _token,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
    "reference": _reference,
    "uri": _uri,
}
