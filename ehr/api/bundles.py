"""Bundles the server assembles from stored text: history and $everything.

Entries embed each stored resource text verbatim; only the envelope is built here.
"""

from __future__ import annotations

from urllib.parse import urlencode

from ehr import fhirjson
from ehr.models import Resource, ResourceVersion
from ehr.services.storage import instant


def paging_links(self_url: str, params: list[tuple[str, str]], *, offset: int, count: int,
                 total: int) -> list[dict]:
    """self, first, previous and next links: the same query with another ``_offset``."""
    kept = [(k, v) for k, v in params if k not in ("_offset", "_count")]

    def link(relation: str, at: int) -> dict:
        query = urlencode([*kept, ("_count", str(count)), ("_offset", str(at))])
        return {"relation": relation, "url": f"{self_url}?{query}"}

    links = [link("self", offset), link("first", 0)]
    if offset > 0:
        links.append(link("previous", max(0, offset - count)))
    if offset + count < total:
        links.append(link("next", offset + count))
    return links


def history_bundle(versions: list[ResourceVersion], *, base_url: str, total: int, links: list[dict]) -> str:
    entries = [_history_entry(version, base_url) for version in versions]
    return (f'{{"resourceType":"Bundle","type":"history","total":{total},'
            f'"link":{fhirjson.dumps(links)},"entry":[' + ",".join(entries) + "]}")


def searchset(resources: list[Resource], *, base_url: str, total: int, links: list[dict]) -> str:
    entries = [
        f'{{"fullUrl":{fhirjson.dumps(_full_url(base_url, row))},"resource":{row.text},'
        '"search":{"mode":"match"}}'
        for row in resources
    ]
    return (f'{{"resourceType":"Bundle","type":"searchset","total":{total},'
            f'"link":{fhirjson.dumps(links)},"entry":[' + ",".join(entries) + "]}")


def _history_entry(version: ResourceVersion, base_url: str) -> str:
    url = f"{version.resource_type}/{version.logical_id}"
    response = {"etag": f'W/"{version.version_id}"', "lastModified": instant(version.last_updated)}
    if version.deleted:
        request = {"method": "DELETE", "url": url}
        response["status"] = "204 No Content"
        resource = ""
    else:
        request = {"method": "POST" if version.method == "POST" else "PUT",
                   "url": version.resource_type if version.method == "POST" else url}
        response["status"] = "201 Created" if version.version_id == 1 else "200 OK"
        resource = f',"resource":{version.text}'
    return (f'{{"fullUrl":{fhirjson.dumps(f"{base_url}/{url}")}{resource},'
            f'"request":{fhirjson.dumps(request)},"response":{fhirjson.dumps(response)}}}')


def _full_url(base_url: str, row: Resource) -> str:
    return f"{base_url}/{row.resource_type}/{row.logical_id}"
