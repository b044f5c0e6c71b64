"""FHIR decimals as the number and quantity indexes hold them (no database code).

FHIR's decimal has no range or precision limit; PostgreSQL ``numeric`` without typmod holds
values below 1e131072 with digits down to 1e-16383, and a btree entry at most 2,704 bytes
(about 5,000 digits). So the index keeps every value within a range a little inside those
limits exactly as written, rounds significant digits past ``INDEX_DIGITS`` and digits below
``1e{INDEX_MIN_EXPONENT}``, and holds a value beyond ``INDEX_MAX`` at that bound (order kept:
gt, lt and sort stay right). The search code reads query values through the same function,
so a value is always found by its own text.
"""

from __future__ import annotations

from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal

INDEX_DIGITS = 1000  # significant digits kept (about 500 bytes of numeric)
INDEX_MAX_ADJUSTED = 131070  # so a search bound (value ± half a unit, ±10 %) stays below 1e131072
INDEX_MIN_EXPONENT = -16382  # so half a unit of the last digit (…e-16383) is still a numeric
INDEX_MAX = Decimal(f"9.{'9' * (INDEX_DIGITS - 1)}E+{INDEX_MAX_ADJUSTED}")
_SMALLEST = Decimal(f"1E{INDEX_MIN_EXPONENT}")
_COARSEST_ZERO = Decimal(f"0E+{INDEX_MAX_ADJUSTED}")
# Arithmetic on indexed values and their bounds is exact: at most INDEX_DIGITS + a few digits.
EXACT = Context(prec=INDEX_DIGITS + 10, Emax=MAX_EMAX, Emin=MIN_EMIN)
_ROUND = Context(prec=INDEX_DIGITS, Emax=MAX_EMAX, Emin=MIN_EMIN)


def index_decimal(value: Decimal) -> Decimal:
    """A finite decimal as the index holds it: itself, unless beyond the limits above."""
    if len(value.as_tuple().digits) > INDEX_DIGITS:
        value = _ROUND.plus(value)
    if value.as_tuple().exponent < INDEX_MIN_EXPONENT:  # type: ignore[operator] - finite: an int
        value = value.quantize(_SMALLEST, context=EXACT)
    if value.is_zero():  # its exponent is only its precision (0E+999999 is no huge value)
        return value.copy_abs() if value.adjusted() <= INDEX_MAX_ADJUSTED else _COARSEST_ZERO
    if value.adjusted() > INDEX_MAX_ADJUSTED:
        return INDEX_MAX.copy_sign(value)
    return value
