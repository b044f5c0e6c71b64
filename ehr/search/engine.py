"""Running a parsed search: one query for the page, one for the total, one per include level."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery

from ehr.models import INDEX_MODELS, ReferenceIndex, Resource

from .filters import criterion_q
from .query import Include, SearchQuery, SortKey

SORT_COLUMNS = {  # (ascending: min of, descending: max of)
    "string": ("value", "value"),
    "token": ("code", "code"),
    "date": ("low", "high"),
    "number": ("value", "value"),
    "quantity": ("value", "value"),
    "reference": ("target_id", "target_id"),
    "uri": ("value", "value"),
}


@dataclass
class SearchResult:
    matches: list[Resource]
    included: list[Resource]
    total: int | None
    warnings: list[str] = field(default_factory=list)
    offset: int = 0
    count: int = 0
    has_next: bool = False


def matching(query: SearchQuery, visible: Q | None = None) -> QuerySet[Resource]:
    """Every current resource meeting all criteria, unordered; chains see only ``visible`` targets."""
    resources = Resource.objects.filter(deleted=False)
    if query.resource_type is not None:
        resources = resources.filter(resource_type=query.resource_type)
    elif query.types:
        resources = resources.filter(resource_type__in=query.types)
    for criterion in query.criteria:
        resources = resources.filter(criterion_q(criterion, visible))
    return resources


def run_search(query: SearchQuery, *, visible: Q | None = None) -> SearchResult:
    """The page of matches asked for, its included resources and the total.

    ``visible`` (the caller's access filter) applies to matches, includes and counts
    alike, so a hidden resource is neither returned nor counted nor paged over.
    """
    resources = matching(query, visible)
    if visible is not None:
        resources = resources.filter(visible)
    page: list[Resource] = []
    if query.count:
        window = _ordered(resources, query.sort)[query.offset:query.offset + query.count + 1]
        page = list(window)
    has_next = len(page) > query.count
    page = page[:query.count]
    return SearchResult(
        matches=page,
        included=_included(page, query.includes, visible),
        total=_total(query, resources, page, has_next),
        warnings=list(query.warnings),
        offset=query.offset,
        count=query.count,
        has_next=has_next,
    )


def _total(query: SearchQuery, resources: QuerySet[Resource], page: list, has_next: bool) -> int | None:
    if query.total == "none" and query.summary != "count":
        return None
    if query.count and not has_next and (page or query.offset == 0):
        return query.offset + len(page)
    # ``_total=estimate`` gets the exact count: the planner's estimate comes from statistics
    # over every hospital's rows, so it would tell a caller how many hidden resources match.
    return resources.count()


def _ordered(resources: QuerySet[Resource], keys: list[SortKey]) -> QuerySet[Resource]:
    order = []
    for position, key in enumerate(keys):
        alias = f"sort_{position}"
        resources = resources.annotate(**{alias: _sort_value(key)})
        column = F(alias)
        order.append(column.desc(nulls_last=True) if key.descending else column.asc(nulls_last=True))
    return resources.order_by(*order, "pk")


def _sort_value(key: SortKey):
    code, kind = key.param.code, key.param.type
    if code == "_id":
        return F("logical_id")
    if code == "_lastUpdated":
        return F("last_updated")
    column = SORT_COLUMNS[kind][1 if key.descending else 0]
    rows = INDEX_MODELS[kind].objects.filter(resource_id=OuterRef("pk"), param=code)
    rows = rows.exclude(**{f"{column}__isnull": True})
    rows = rows.order_by(f"-{column}" if key.descending else column)
    return Subquery(rows.values(column)[:1])


def _included(page: list[Resource], includes: list[Include], visible: Q | None) -> list[Resource]:
    """Resources named by ``_include``/``_revinclude``; ``:iterate`` ones go one level further."""
    if not page or not includes:
        return []
    seen = {resource.pk for resource in page}
    first = _include_level(page, includes, seen, visible)
    iterating = [include for include in includes if include.iterate]
    second = _include_level(first, iterating, seen, visible) if first and iterating else []
    return first + second


def _include_level(sources: list[Resource], includes: list[Include], seen: set[int],
                   visible: Q | None) -> list[Resource]:
    conditions = [_include_q(include, sources) for include in includes]
    conditions = [condition for condition in conditions if condition is not None]
    if not conditions:
        return []
    found = Resource.objects.filter(deleted=False).exclude(pk__in=seen)
    if visible is not None:
        found = found.filter(visible)
    found = list(found.filter(_either(conditions)).order_by("resource_type", "pk"))
    seen.update(resource.pk for resource in found)
    return found


def _include_q(include: Include, sources: list[Resource]) -> Q | None:
    if include.reverse:
        return _revinclude_q(include, sources)
    source_ids = [r.pk for r in sources if include.source_type in (None, r.resource_type)]
    if not source_ids:
        return None
    links = ReferenceIndex.objects.filter(resource_id__in=source_ids, target_type=OuterRef("resource_type"),
                                          target_id=OuterRef("logical_id"))
    if include.param is not None:
        links = links.filter(param=include.param)
    if include.target_type is not None:
        links = links.filter(target_type=include.target_type)
    return Q(Exists(links))


def _revinclude_q(include: Include, sources: list[Resource]) -> Q | None:
    by_type: dict[str, list[str]] = {}
    for resource in sources:
        if include.target_type in (None, resource.resource_type):
            by_type.setdefault(resource.resource_type, []).append(resource.logical_id)
    if not by_type:
        return None
    targets = _either([Q(target_type=t, target_id__in=ids) for t, ids in by_type.items()])
    links = ReferenceIndex.objects.filter(targets, resource_id=OuterRef("pk"))
    if include.param is not None:
        links = links.filter(param=include.param)
    match = Q(Exists(links))
    return match & Q(resource_type=include.source_type) if include.source_type else match


def _either(conditions: list[Q]) -> Q:
    combined = conditions[0]
    for condition in conditions[1:]:
        combined |= condition
    return combined
