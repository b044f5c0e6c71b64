"""Which account organization owns an Organization, and so the records that point at it.

An organization on this node owns the Organization resources it wrote and those whose
``partOf`` chain reaches one it owns (its labs, departments, wards). A Patient managed by
such an Organization belongs to that owner, and so does its compartment; a Location,
HealthcareService, PractitionerRole or Endpoint of it likewise (``ehr.services.storage``).
An organization of the node (an account's, or one that owns records) owns itself, whether or
not its Organization resource was written yet: its id is public (consents name it as grantee).

The chain is walked in one SQL statement, at most ``MAX_DEPTH`` links up, and a cycle (a
``partOf`` loop a client wrote) stops the walk instead of spinning.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection

from access.models import AccessProfile
from ehr.fhir import RELATIVE_REFERENCE
from ehr.models import ReferenceIndex, Resource

MAX_DEPTH = 16

# The element that makes a resource an organization's, by type (its search parameter code).
OWNING_ELEMENT = {
    "Patient": ("managingOrganization", "organization"),
    "Organization": ("partOf", "partof"),
    "Location": ("managingOrganization", "organization"),
    "HealthcareService": ("providedBy", "organization"),
    "PractitionerRole": ("organization", "organization"),
    "Endpoint": ("managingOrganization", "organization"),
}


def owning_reference(resource_type: str, resource: dict) -> str | None:
    """The id of the Organization the resource says it belongs to (a local ``Organization/id``)."""
    element = OWNING_ELEMENT.get(resource_type)
    node = resource.get(element[0]) if element else None
    reference = node.get("reference") if isinstance(node, dict) else None
    match = RELATIVE_REFERENCE.fullmatch(reference) if isinstance(reference, str) else None
    return match.group(2) if match and match.group(1) == "Organization" else None


def node_organizations(ids: Iterable[str]) -> set[str]:
    """The ids among these that are an organization of this node: an account's, or an owner of records.

    Their ids are public (consents name them as grantees, audit entries as agents): pointing
    at one tells nobody anything, so a write naming another's is refused as forbidden (403).
    """
    wanted = {i for i in ids if i}
    if not wanted:
        return set()
    accounts = set(AccessProfile.objects.filter(organization_id__in=wanted)
                   .values_list("organization_id", flat=True).distinct())
    rest = wanted - accounts
    owners = set(Resource.objects.filter(organization_id__in=rest).values_list("organization_id", flat=True)
                 .distinct()) if rest else set()
    return accounts | owners


_CHAIN = """
WITH RECURSIVE chain (start, current, owner, depth, path) AS (
    SELECT r.logical_id, r.logical_id, COALESCE(a.organization_id, r.organization_id), 0, ARRAY[r.logical_id::varchar]
      FROM {resource} r
      LEFT JOIN (SELECT DISTINCT organization_id FROM {profile}) a ON a.organization_id = r.logical_id
     WHERE r.resource_type = 'Organization' AND NOT r.deleted AND r.logical_id = ANY(%s)
    UNION ALL
    SELECT c.start, p.logical_id, COALESCE(a.organization_id, p.organization_id), c.depth + 1,
           c.path || p.logical_id::varchar
      FROM chain c
      JOIN {resource} cr ON cr.resource_type = 'Organization' AND cr.logical_id = c.current
      JOIN {reference} ri ON ri.resource_id = cr.id AND ri.param = 'partof'
                         AND ri.target_type = 'Organization' AND ri.url IS NULL
      JOIN {resource} p ON p.resource_type = 'Organization' AND p.logical_id = ri.target_id AND NOT p.deleted
      LEFT JOIN (SELECT DISTINCT organization_id FROM {profile}) a ON a.organization_id = p.logical_id
     WHERE c.owner IS NULL AND c.depth < %s AND NOT p.logical_id = ANY(c.path)
)
SELECT DISTINCT ON (start) start, owner FROM chain WHERE owner IS NOT NULL ORDER BY start, depth
"""


def organization_owners(ids: Iterable[str]) -> dict[str, str]:
    """Owning account organization of each stored, live Organization among ``ids`` (one query).

    An id absent from the answer is no Organization here, or one that nobody owns.
    """
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    quote = connection.ops.quote_name
    sql = _CHAIN.format(resource=quote(Resource._meta.db_table), reference=quote(ReferenceIndex._meta.db_table),
                        profile=quote(AccessProfile._meta.db_table))
    with connection.cursor() as cursor:
        cursor.execute(sql, [wanted, MAX_DEPTH])
        owners = dict(cursor.fetchall())
    return owners | {i: i for i in node_organizations(wanted)}


def batch_owners(written: dict[str, str | None], fallback: dict[str, str | None]) -> dict[str, str | None]:
    """Owners of Organizations written together (a Bundle's hospital, its lab with ``partOf`` it).

    ``written`` maps each new Organization's id to the id its ``partOf`` names; ``fallback``
    to the owner it has if its parent is unknown (its writer). Parents outside the batch are
    looked up stored (``organization_owners``), once for the whole batch.
    """
    stored = organization_owners({p for p in written.values() if p and p not in written})
    accounts = node_organizations(written)
    resolved: dict[str, str | None] = {}

    def owner(org_id: str, seen: frozenset[str]) -> str | None:
        if org_id in resolved:
            return resolved[org_id]
        if org_id in accounts:
            return org_id
        parent = written[org_id]
        if parent is None or parent in seen or len(seen) > MAX_DEPTH:
            return fallback[org_id]
        if parent in written:
            found = owner(parent, seen | {parent})
        else:
            found = stored.get(parent)
        return found if found is not None else fallback[org_id]

    for org_id in written:
        resolved[org_id] = owner(org_id, frozenset({org_id}))
    return resolved
