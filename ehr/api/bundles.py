"""Bundles the server assembles from stored text: history and $everything.

Entries embed each stored resource text verbatim; only the envelope is built here.
"""

from __future__ import annotations

from ehr import envelope, fhirjson
from ehr.fhir import instant
from ehr.models import Resource, ResourceVersion


def history_bundle(versions: list[ResourceVersion], *, base_url: str, total: int, links: list[dict]) -> str:
    entries = [_history_entry(version, base_url) for version in versions]
    return envelope.bundle("history", entries, total=total, links=links)


def searchset(resources: list[Resource], *, base_url: str, total: int, links: list[dict]) -> str:
    entries = [envelope.entry(f"{base_url}/{row.resource_type}/{row.logical_id}", row.text)
               for row in resources]
    return envelope.bundle("searchset", entries, total=total, links=links)


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
