"""DICOM → FHIR R4B: the Patient created for an unknown PatientID and the ImagingStudy of a study.

Pure functions building plain dicts; ``imaging.services`` writes them through
``ehr.services`` so they are validated, versioned, indexed and owned like any resource.
"""

from __future__ import annotations

import re
from datetime import date
from urllib.parse import quote

from ehr.fhir import ID_PATTERN

DCM = "http://dicom.nema.org/resources/ontology/DCM"
TAG_SYSTEM = "https://carrack.health/fhir/CodeSystem/record-origin"
AUTO_CREATED_TAG = {"system": TAG_SYSTEM, "code": "created-from-dicom",
                    "display": "Created from a received DICOM study"}
_OID = re.compile(r"[0-9]+(\.[0-9]+)+")
GENDERS = {"M": "male", "F": "female", "O": "other"}


def patient_identifier_system(*, issuer: str, organization_id: str) -> str:
    """The FHIR identifier system for a DICOM IssuerOfPatientID.

    An OID issuer becomes ``urn:oid:``, a URI stays as it is, any other name is quoted into a
    URN; a PatientID without an issuer is local to the sender, so its system is the sender's.
    """
    issuer = issuer.strip()
    if not issuer:
        return f"urn:carrack:organization:{quote(organization_id, safe='')}:patient-id"
    if _OID.fullmatch(issuer):
        return f"urn:oid:{issuer}"
    if re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+$", issuer):
        return issuer
    return f"urn:carrack:dicom-issuer:{quote(issuer, safe='')}"


def patient_resource(*, system: str, value: str, name: str, birth_date: date | None, sex: str) -> dict:
    """A Patient made from a study's patient module, tagged as created from DICOM."""
    resource: dict = {"resourceType": "Patient", "meta": {"tag": [AUTO_CREATED_TAG]},
                      "identifier": [{"system": system, "value": value}]}
    human = human_name(name)
    if human:
        resource["name"] = [human]
    if sex.upper() in GENDERS:
        resource["gender"] = GENDERS[sex.upper()]
    if birth_date:
        resource["birthDate"] = birth_date.isoformat()
    return resource


def human_name(person_name: str) -> dict | None:
    """A DICOM PN (``Family^Given^Middle^Prefix^Suffix``, alphabetic group) as a HumanName."""
    alphabetic = person_name.split("=")[0]
    parts = [part.strip() for part in alphabetic.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    name: dict = {}
    if family:
        name["family"] = family
    if given or middle:
        name["given"] = [part for part in (given, middle) if part]
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name or None


def endpoint_id(organization_id: str) -> str:
    candidate = f"dicomweb-{organization_id}"
    return candidate if ID_PATTERN.fullmatch(candidate) else "dicomweb"


def endpoint_resource(*, logical_id: str, address: str) -> dict:
    return {
        "resourceType": "Endpoint", "id": logical_id, "status": "active",
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                           "code": "dicom-wado-rs"},
        "name": "DICOMweb (WADO-RS, QIDO-RS, STOW-RS)",
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }


def imaging_study_resource(*, study, series: list, instances_by_series: dict, endpoint: str) -> dict:
    """The ImagingStudy of a ``Study`` row, its ``Series`` rows and their ``Instance`` rows."""
    total = sum(len(instances_by_series.get(row.pk, ())) for row in series)
    resource: dict = {
        "resourceType": "ImagingStudy", "id": study.fhir_id,
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study.study_instance_uid}"}],
        "status": "available",
        "subject": {"reference": f"Patient/{study.patient_id}"},
        "endpoint": [{"reference": f"Endpoint/{endpoint}"}],
        "numberOfSeries": len(series),
        "numberOfInstances": total,
    }
    if study.accession_number:
        resource["identifier"].append({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
            "value": study.accession_number})
    modalities = sorted({row.modality for row in series if row.modality})
    if modalities:
        resource["modality"] = [{"system": DCM, "code": code} for code in modalities]
    if study.study_date:
        resource["started"] = study.study_date.isoformat()
    if study.study_description:
        resource["description"] = study.study_description
    resource["series"] = [_series(row, instances_by_series.get(row.pk, [])) for row in series]
    return resource


def _series(row, instances: list) -> dict:
    entry: dict = {"uid": row.series_instance_uid}
    if row.series_number is not None and row.series_number >= 0:
        entry["number"] = row.series_number
    entry["modality"] = {"system": DCM, "code": row.modality or "OT"}
    if row.series_description:
        entry["description"] = row.series_description
    entry["numberOfInstances"] = len(instances)
    entry["instance"] = [_instance(instance) for instance in instances]
    return entry


def _instance(row) -> dict:
    entry: dict = {"uid": row.sop_instance_uid,
                   "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{row.sop_class_uid}"}}
    if row.instance_number is not None and row.instance_number >= 0:
        entry["number"] = row.instance_number
    return entry
