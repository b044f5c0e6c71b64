"""The feeds a hospital integrator plays first, end to end through fhirpy with the integration token.

ADT: the facility's Organization hierarchy (hospital, its lab and radiology department, each
with an identifier), Practitioners and a PractitionerRole, a Patient registered under the
lab's parent hospital, an Encounter admitted, transferred and discharged (three versions in
its history). Lab: a ServiceRequest answered by a DiagnosticReport with its Observations.
Radiology: an ImagingStudy. Then a duplicate Patient merged into the first
(``Patient.link`` replaced-by / replaces), and the searches a feed relies on: by identifier,
and by patient with paging that fhirpy follows through the ``next`` links.
"""

from __future__ import annotations

import pytest
from fhirpy import SyncFHIRClient

from tests.ehr.conftest import integration_token

pytestmark = pytest.mark.django_db(transaction=True)

HOSPITAL = "hosp-feeds"
MRN = "urn:oid:2.16.840.1.113883.3.72.5.9.1"
NPI = "http://hl7.org/fhir/sid/us-npi"
LOINC = "http://loinc.org"


@pytest.fixture
def fhir(live_server, transactional_db) -> SyncFHIRClient:
    token = integration_token("adt-feed", organization_id=HOSPITAL)
    return SyncFHIRClient(f"{live_server.url}/fhir", authorization=f"Bearer {token}")


def _save(fhir: SyncFHIRClient, resource_type: str, **body):
    resource = fhir.resource(resource_type, **body)
    resource.save()
    return resource


def _org(fhir, name: str, value: str, part_of=None):
    return _save(fhir, "Organization", name=name, active=True,
                 identifier=[{"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{value}"}],
                 **({"partOf": part_of.to_reference()} if part_of else {}))


def _observation(patient, code: str, value: float, unit: str, request):
    return {"status": "final", "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": patient.to_reference(), "basedOn": [request.to_reference()],
            "effectiveDateTime": "2026-12-01T08:30:00Z",
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                              "code": unit}}


def test_adt_lab_and_radiology_feeds_through_fhirpy(fhir):
    hospital = _org(fhir, "St. Example General", "1.2.3.4")
    lab = _org(fhir, "Central Laboratory", "1.2.3.4.10", part_of=hospital)
    radiology = _org(fhir, "Radiology Department", "1.2.3.4.20", part_of=hospital)
    physician = _save(fhir, "Practitioner", identifier=[{"system": NPI, "value": "1234567893"}],
                      name=[{"family": "House", "given": ["Gregory"]}])
    pathologist = _save(fhir, "Practitioner", identifier=[{"system": NPI, "value": "1245319599"}],
                        name=[{"family": "Quincy", "given": ["R."]}])
    role = _save(fhir, "PractitionerRole", active=True, practitioner=pathologist.to_reference(),
                 organization=lab.to_reference(),
                 code=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/practitioner-role",
                                    "code": "doctor"}]}])
    patient = _save(fhir, "Patient", identifier=[{"system": MRN, "value": "MRN-4711"}],
                    name=[{"family": "Feedwell", "given": ["Ada"]}], gender="female",
                    birthDate="1980-02-29", managingOrganization=hospital.to_reference())

    # ADT: admit, transfer, discharge
    encounter = _save(fhir, "Encounter", status="in-progress",
                      **{"class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}},
                      subject=patient.to_reference(), serviceProvider=hospital.to_reference(),
                      participant=[{"individual": physician.to_reference()}],
                      period={"start": "2026-12-01T07:00:00Z"})
    encounter["serviceProvider"] = radiology.to_reference()  # transfer to another unit
    encounter.save()
    encounter["status"] = "finished"
    encounter["period"] = {"start": "2026-12-01T07:00:00Z", "end": "2026-12-03T11:00:00Z"}
    encounter.save()
    history = fhir.execute(f"Encounter/{encounter.id}/_history", method="get")
    assert [e["resource"]["status"] for e in history["entry"]] == ["finished", "in-progress", "in-progress"]

    # Lab: order, results, report
    order = _save(fhir, "ServiceRequest", status="active", intent="order", subject=patient.to_reference(),
                  encounter=encounter.to_reference(), requester=physician.to_reference(),
                  performer=[lab.to_reference()],
                  code={"coding": [{"system": LOINC, "code": "24323-8"}]})
    results = [_save(fhir, "Observation", **_observation(patient, code, value, unit, order))
               for code, value, unit in (("2345-7", 5.4, "mmol/L"), ("2160-0", 88, "umol/L"),
                                         ("2951-2", 140, "mmol/L"))]
    report = _save(fhir, "DiagnosticReport", status="final", basedOn=[order.to_reference()],
                   subject=patient.to_reference(), code={"coding": [{"system": LOINC, "code": "24323-8"}]},
                   performer=[role.to_reference()], result=[r.to_reference() for r in results],
                   issued="2026-12-01T09:00:00Z")
    order["status"] = "completed"
    order.save()

    # Radiology
    study = _save(fhir, "ImagingStudy", status="available", subject=patient.to_reference(),
                  encounter=encounter.to_reference(), referrer=physician.to_reference(),
                  identifier=[{"system": "urn:dicom:uid", "value": "urn:oid:2.25.1234567890123456789"}],
                  basedOn=[order.to_reference()], numberOfSeries=0, numberOfInstances=0)

    # Merge: a duplicate registration replaced by the first one
    duplicate = _save(fhir, "Patient", identifier=[{"system": MRN, "value": "MRN-4712"}],
                      name=[{"family": "Feedwell", "given": ["Ada"]}], birthDate="1980-02-29",
                      managingOrganization=lab.to_reference())
    duplicate["active"] = False
    duplicate["link"] = [{"other": patient.to_reference(), "type": "replaced-by"}]
    duplicate.save()
    patient["link"] = [{"other": duplicate.to_reference(), "type": "replaces"}]
    patient.save()

    # Searches a feed relies on
    by_mrn = fhir.resources("Patient").search(identifier=f"{MRN}|MRN-4711").fetch_all()
    assert [p.id for p in by_mrn] == [patient.id]
    paged = fhir.resources("Observation").search(patient=patient.id).limit(1).fetch_all()
    assert sorted(o.id for o in paged) == sorted(r.id for r in results)
    everything_of_patient = {
        "Encounter": fhir.resources("Encounter").search(patient=patient.id).fetch_all(),
        "DiagnosticReport": fhir.resources("DiagnosticReport").search(patient=patient.id).fetch_all(),
        "ImagingStudy": fhir.resources("ImagingStudy").search(patient=patient.id).fetch_all(),
        "ServiceRequest": fhir.resources("ServiceRequest").search(patient=patient.id).fetch_all(),
    }
    assert {t: [r.id for r in found] for t, found in everything_of_patient.items()} == {
        "Encounter": [encounter.id], "DiagnosticReport": [report.id], "ImagingStudy": [study.id],
        "ServiceRequest": [order.id]}
    departments = fhir.resources("Organization").search(partof=hospital.id).fetch_all()
    assert sorted(o.id for o in departments) == sorted([lab.id, radiology.id])
    merged = fhir.reference("Patient", duplicate.id).to_resource()
    assert merged["link"][0]["type"] == "replaced-by" and merged["active"] is False
