"""Criteria as ORM conditions on ``Resource``: one ``EXISTS`` on an index table per criterion.

Date semantics follow the R4 prefix table (search.html#prefix) with the value's range
[low, high] and the indexed range [low, high] (None = open): ``eq`` the search range
contains the indexed range, ``ne`` it does not, ``gt``/``lt`` the indexed range reaches
beyond it, ``ge``/``le`` either, ``sa``/``eb`` starts after / ends before, ``ap`` overlaps
the search range widened by 10% of its distance to now (at least one day).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import reduce
from operator import or_

from django.db.models import Exists, OuterRef, Q, Subquery
from django.utils import timezone

from ehr.models import INDEX_MODELS, Resource
from ehr.numeric import EXACT

from .query import Criterion
from .values import DateValue, NumberValue, QuantityValue, ReferenceValue, TokenValue


def index_rows(resource_type: str | None, code: str, kind: str, *, outer: str = "pk"):
    """The index rows of parameter ``code`` belonging to the outer query's resource."""
    rows = INDEX_MODELS[kind].objects.filter(resource_id=OuterRef(outer), param=code)
    return rows.filter(resource_type=resource_type) if resource_type else rows


def criterion_q(criterion: Criterion, visible: Q | None = None) -> Q:
    """The criterion as a condition on ``Resource``; a chain looks only at ``visible`` targets
    (the caller's access filter), or a chained search would confirm another hospital's
    patient's attributes one guess at a time."""
    code, kind, modifier = criterion.param.code, criterion.param.type, criterion.modifier
    if code == "_id":
        match = Q(logical_id__in=[value.code for value in criterion.values])
        return ~match if modifier == "not" else match
    if code == "_lastUpdated":
        return _any(_last_updated(value) for value in criterion.values)
    rows = index_rows(criterion.resource_type, code, kind)
    if criterion.chain is not None:
        return Q(Exists(rows.filter(_chain(criterion, visible))))
    if modifier == "missing":
        return ~Q(Exists(rows)) if criterion.values[0] else Q(Exists(rows))
    match = _any(_value_q(kind, modifier, value) for value in criterion.values)
    if modifier == "not":
        return ~Q(Exists(rows.filter(match)))
    return Q(Exists(rows.filter(match)))


def _any(conditions) -> Q:
    return reduce(or_, conditions)


def _value_q(kind: str, modifier: str | None, value) -> Q:
    return _VALUE_BUILDERS[kind](modifier, value)


def _string(modifier: str | None, value: str) -> Q:
    if modifier == "exact":
        return Q(exact=value)
    if modifier == "contains":
        return Q(value__contains=value)
    return Q(value__startswith=value)


def _token(modifier: str | None, value: TokenValue | str) -> Q:
    if isinstance(value, str):  # :text
        return Q(text__istartswith=value)
    match = Q()
    if value.code is not None:
        match &= Q(code=value.code)
    if value.system == "":
        match &= Q(system__isnull=True) | Q(system="")
    elif value.system is not None:
        match &= Q(system=value.system)
    return match


def _uri(modifier: str | None, value: str) -> Q:
    if modifier == "below":
        return Q(value__startswith=value)
    if modifier == "above":
        return Q(value__in=_uri_ancestors(value))
    return Q(value=value)


def _uri_ancestors(value: str) -> list[str]:
    """``http://a/b/c`` and every shorter path prefix of it (``http://a/b``, ``http://a``)."""
    head, sep, path = value.partition("://")
    parts = path.split("/") if sep else value.split("/")
    prefix = head + sep if sep else ""
    return [prefix + "/".join(parts[:end]) for end in range(1, len(parts) + 1)]


def _reference(modifier: str | None, value: ReferenceValue) -> Q:
    if value.url is not None:
        return Q(url=value.url)
    match = Q(target_id=value.target_id)
    if value.target_type:
        match &= Q(target_type=value.target_type)
    if modifier and modifier != "missing":
        match &= Q(target_type=modifier)
    return match


def _chain(criterion: Criterion, visible: Q | None) -> Q:
    """The reference points at a resource of one of the chain types meeting the inner criterion."""
    inner = criterion.chain
    assert inner is not None
    branches = []
    for target_type in criterion.chain_types:
        typed = Criterion(resource_type=target_type, param=inner.param, modifier=inner.modifier,
                          values=inner.values)
        targets = Resource.objects.filter(resource_type=target_type, deleted=False)
        if visible is not None:
            targets = targets.filter(visible)
        targets = targets.filter(criterion_q(typed)).values("logical_id")
        branches.append(Q(target_type=target_type, target_id__in=Subquery(targets)))
    return _any(branches)


def _number(modifier: str | None, value: NumberValue, column: str = "value") -> Q:
    prefix, exact = value.prefix, value.value

    def cmp(op: str, bound: Decimal) -> Q:
        return Q(**{f"{column}__{op}": bound})

    if prefix == "eq":
        return cmp("gte", value.low) & cmp("lt", value.high)
    if prefix == "ne":
        return cmp("lt", value.low) | cmp("gte", value.high)
    if prefix == "ap":  # exact arithmetic: the default context rounds past 28 digits
        spread = max(EXACT.divide(exact.copy_abs(), 10), EXACT.subtract(value.high, exact))
        return cmp("gte", EXACT.subtract(exact, spread)) & cmp("lte", EXACT.add(exact, spread))
    op = {"gt": "gt", "sa": "gt", "lt": "lt", "eb": "lt", "ge": "gte", "le": "lte"}[prefix]
    return cmp(op, exact)


def _quantity(modifier: str | None, value: QuantityValue) -> Q:
    match = _number(modifier, value.number)
    if value.system is not None:
        match &= Q(system=value.system)
    if value.code is not None:
        match &= Q(code=value.code) if value.system is not None else Q(code=value.code) | Q(unit=value.code)
    return match


def _date(modifier: str | None, value: DateValue) -> Q:
    low, high = value.low, value.high
    # low <= high on every row, so the redundant outer bounds let either index scan a narrow range.
    eq = Q(low__gte=low, low__lte=high, high__lte=high, high__gte=low)
    gt = Q(high__isnull=True) | Q(high__gt=high)
    lt = Q(low__isnull=True) | Q(low__lt=low)
    if value.prefix == "ap":
        low, high = _approximate(low, high)
        return (Q(low__isnull=True) | Q(low__lte=high)) & (Q(high__isnull=True) | Q(high__gte=low))
    return {
        "eq": eq,
        "ne": Q(low__isnull=True) | Q(high__isnull=True) | Q(low__lt=low) | Q(high__gt=high),
        "gt": gt,
        "lt": lt,
        "ge": gt | eq,
        "le": lt | eq,
        "sa": Q(low__gt=high),
        "eb": Q(high__lt=low),
    }[value.prefix]


def _approximate(low, high):
    now = timezone.now()
    gap = max(abs(now - low), abs(now - high)) / 10
    gap = max(gap, timedelta(days=1))
    # ap0001 widens past year 1 (an OverflowError, formerly a 500): the range stops at the ends.
    return (low - gap if low - datetime.min.replace(tzinfo=UTC) > gap else datetime.min.replace(tzinfo=UTC),
            high + gap if datetime.max.replace(tzinfo=UTC) - high > gap else datetime.max.replace(tzinfo=UTC))


def _last_updated(value: DateValue) -> Q:
    """Date semantics on the instant ``Resource.last_updated`` (a range of one point)."""
    low, high = value.low, value.high
    if value.prefix == "ap":
        low, high = _approximate(low, high)
        return Q(last_updated__gte=low, last_updated__lte=high)
    return {
        "eq": Q(last_updated__gte=low, last_updated__lte=high),
        "ne": Q(last_updated__lt=low) | Q(last_updated__gt=high),
        "gt": Q(last_updated__gt=high),
        "sa": Q(last_updated__gt=high),
        "lt": Q(last_updated__lt=low),
        "eb": Q(last_updated__lt=low),
        "ge": Q(last_updated__gte=low),
        "le": Q(last_updated__lte=high),
    }[value.prefix]


_VALUE_BUILDERS = {
    "string": _string,
    "token": _token,
    "date": _date,
    "reference": _reference,
    "quantity": _quantity,
    "number": _number,
    "uri": _uri,
}
