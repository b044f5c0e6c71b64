"""The one Bundle envelope and paging-link builder: searchset, history, ``$everything``, AuditEvent.

Entries arrive as JSON text (each stored resource embedded verbatim), so only the envelope
is serialized here. Every paged answer links the same way: the applied parameters, then
``_count``, then ``_offset`` when it is not the first page.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import urlencode

from . import fhirjson
from .fhir import instant

LINK_SAFE = ":|,/*$"  # left readable in links: FHIR modifiers, chains, tokens, lists
PAGING_PARAMS = ("_count", "_offset")


def paging_links(url: str, params: Iterable[tuple[str, str]], *, offset: int, count: int,
                 has_next: bool) -> list[dict]:
    """self, first, previous and next: the same query with another ``_offset``."""
    kept = [(name, value) for name, value in params if name not in PAGING_PARAMS]

    def link(relation: str, at: int) -> dict:
        pairs = [*kept, ("_count", str(count))]
        if at:
            pairs.append(("_offset", str(at)))
        return {"relation": relation, "url": f"{url}?{urlencode(pairs, safe=LINK_SAFE)}"}

    links = [link("self", offset), link("first", 0)]
    if offset and count:
        links.append(link("previous", max(0, offset - count)))
    if has_next:
        links.append(link("next", offset + count))
    return links


def entry(full_url: str, resource_text: str, *, mode: str = "match") -> str:
    """A searchset entry around a resource's JSON text."""
    return f'{{"fullUrl":{json.dumps(full_url)},"resource":{resource_text},"search":{{"mode":"{mode}"}}}}'


def bundle(kind: str, entries: list[str] | None, *, total: int | None, links: list[dict],
           now: datetime | None = None) -> str:
    """A Bundle of ``kind`` with a fresh id and lastUpdated; ``entries=None`` leaves them out (_summary=count)."""
    head: dict = {"resourceType": "Bundle", "id": str(uuid.uuid4()),
                  "meta": {"lastUpdated": instant(now or datetime.now(UTC))}, "type": kind}
    if total is not None:
        head["total"] = total
    head["link"] = links
    text = fhirjson.dumps(head)[:-1]
    if entries is not None:
        text += ',"entry":[' + ",".join(entries) + "]"
    return text + "}"
