"""Audit events in the IHE Basic Audit Log Patterns (BALP) shape: a FHIR R4 AuditEvent per access.

Pure (no database): the doors build the event with ``audit_event_balp`` and hand it to
``ledger.services.audit_append``, which stores it in the access's transaction.
"""

from __future__ import annotations

import base64
from datetime import datetime

# agent.policy of an access a consent token allowed: this prefix and the token id (0x…).
CONSENT_TOKEN_URN = "urn:carrack:consent-token:"
# A device agent (a DICOM AE title): ":" is in no Django username, so no account can claim it.
DEVICE_AGENT_PREFIX = "urn:dicom:ae:"

INTERACTION_ACTIONS = {
    "create": "C", "read": "R", "vread": "R", "update": "U", "patch": "U", "delete": "D",
    "history": "R", "history-instance": "R", "history-type": "R", "history-system": "R",
    "search": "E", "search-type": "E", "search-system": "E", "operation": "E",
    "capabilities": "R", "transaction": "E", "batch": "E",
}
OUTCOME_TEXT = {"0": "Success", "4": "Minor failure", "8": "Serious failure", "12": "Major failure"}
_V3_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"


def audit_event_balp(*, interaction: str, agent: str, outcome: str, recorded: datetime,
                     observer: str, resource: str | None = None, patient: str | None = None,
                     query: str | None = None, client: str | None = None,
                     written: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
                     purpose_of_use: str = "TREAT", break_glass: bool = False,
                     break_glass_reason: str | None = None,
                     outcome_description: str | None = None,
                     consent_tokens: list[str] | tuple[str, ...] = (), device: bool = False) -> dict:
    """A FHIR R4 AuditEvent in the IHE Basic Audit Log Patterns (BALP) RESTful shape.

    ``resource`` is a relative reference (``Observation/1/_history/2``), ``written`` the
    (reference, create/update/delete) of each write of a Bundle, entities with their lifecycle,
    ``patient`` the patient's id, ``query`` the search string, ``observer`` this node's name. Break the
    glass adds ``BTG`` to the user's purposeOfUse (with the reason as text) and to the
    event's purposeOfEvent, so it can be searched and reported. ``consent_tokens`` are the
    consent tokens that allowed the access; they become the user agent's ``policy`` URIs.
    With ``device`` the requestor is a device, not a user (a DICOM AE, ``agent`` =
    ``DEVICE_AGENT_PREFIX`` + AE title): an agent of type Source Role ID whose ``who`` is a Device.
    """
    if interaction not in INTERACTION_ACTIONS:
        raise ValueError(f"unknown FHIR interaction {interaction!r}")
    purposes = [{"coding": [{"system": _V3_REASON, "code": purpose_of_use}]}]
    if break_glass:
        purposes.append({"coding": [{"system": _V3_REASON, "code": "BTG", "display": "break the glass"}],
                         **({"text": break_glass_reason} if break_glass_reason else {})})
    event: dict = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "Restful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": interaction}],
        "action": INTERACTION_ACTIONS[interaction],
        "recorded": recorded.isoformat(),
        "outcome": outcome,
        "purposeOfEvent": purposes,
        "agent": _agents(agent=agent, client=client, observer=observer, purposes=purposes,
                         policies=[f"{CONSENT_TOKEN_URN}{token}" for token in consent_tokens], device=device),
        "source": {"observer": {"display": observer}, "type": [{
            "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
            "display": "Application Server"}]},
        "entity": _entities(resource=resource, written=written, patient=patient, query=query),
    }
    if outcome != "0":
        event["outcomeDesc"] = outcome_description or OUTCOME_TEXT[outcome]
    if break_glass:
        event["meta"] = {"security": [{"system": _V3_REASON, "code": "BTG"}]}
    return event


def _agents(*, agent: str, client: str | None, observer: str, purposes: list[dict],
            policies: list[str], device: bool = False) -> list[dict]:
    user = {
        "type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"} if device else
                            {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                             "code": "IRCP", "display": "information recipient"}]},
        "who": {"type": "Device", "identifier": {"value": agent}} if device else {"identifier": {"value": agent}},
        "requestor": True,
        **({"policy": policies} if policies else {}),
        "purposeOfUse": purposes,
    }
    agents = [user, {
        "type": {"coding": [{"system": _DCM, "code": "110152", "display": "Destination Role ID"}]},
        "who": {"display": observer},
        "requestor": False,
    }]
    if client:
        agents.insert(1, {
            "type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
            "who": {"identifier": {"value": client}},
            "requestor": False,
        })
    return agents


def _entities(*, resource: str | None, written, patient: str | None, query: str | None) -> list[dict]:
    entities = []
    if patient:
        entities.append({
            "what": {"reference": f"Patient/{patient}"},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1",
                     "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1",
                     "display": "Patient"},
        })
    if resource:
        entities.append(_domain_resource(resource))
    entities.extend({**_domain_resource(reference), "lifecycle": LIFECYCLES[interaction]}
                    for reference, interaction in written)
    if query is not None:
        entities.append({
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                     "display": "System Object"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24",
                     "display": "Query"},
            "query": base64.b64encode(query.encode()).decode(),
        })
    return entities


def _domain_resource(reference: str) -> dict:
    return {
        "what": {"reference": reference},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                 "display": "System Object"},
        "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4",
                 "display": "Domain Resource"},
    }


_LIFECYCLE = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle"
# What a Bundle's write did to each resource (AuditEvent.entity.lifecycle, ObjectLifecycleEvents).
LIFECYCLES = {
    "create": {"system": _LIFECYCLE, "code": "1", "display": "Origination / Creation"},
    "update": {"system": _LIFECYCLE, "code": "3", "display": "Amendment"},
    "delete": {"system": _LIFECYCLE, "code": "14", "display": "Logical deletion"},
}
