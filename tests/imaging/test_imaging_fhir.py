"""Each stored study gets a FHIR Patient (found or created once) and an ImagingStudy kept in step."""

from __future__ import annotations

import json

import pydicom
from pydicom.uid import generate_uid

from ehr.models import Resource
from imaging.fhirmap import AUTO_CREATED_TAG
from imaging.models import Study
from tests.imaging.conftest import CT, HOSPITAL, US_JPEG2K, US_MULTIFRAME, US_RGB, dicom_dataset

FHIR = {"HTTP_ACCEPT": "application/fhir+json"}


def fhir_get(client, token: str, path: str) -> dict:
    response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}", **FHIR)
    assert response.status_code == 200, response.content
    return response.json()


def new_study_copy(dataset: pydicom.Dataset) -> pydicom.Dataset:
    """The same patient's image as a new study (new study, series and instance UIDs)."""
    copy = pydicom.Dataset(dataset)
    copy.file_meta = dataset.file_meta.copy()
    copy.StudyInstanceUID, copy.SeriesInstanceUID = generate_uid(), generate_uid()
    copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return copy


def test_imaging_study_is_searchable_by_patient_with_the_right_counts(client, web, hospital_token):
    web.store_instances(datasets=[dicom_dataset(US_JPEG2K), dicom_dataset(US_RGB)])
    study = Study.objects.get()

    bundle = fhir_get(client, hospital_token, f"/fhir/ImagingStudy?patient={study.patient_id}")

    [entry] = bundle["entry"]
    imaging = entry["resource"]
    assert imaging["id"] == study.fhir_id
    assert imaging["subject"] == {"reference": f"Patient/{study.patient_id}"}
    assert imaging["numberOfSeries"] == 1
    assert imaging["numberOfInstances"] == 2
    assert imaging["modality"] == [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "US"}]
    assert imaging["identifier"][0] == {"system": "urn:dicom:uid",
                                        "value": f"urn:oid:{study.study_instance_uid}"}
    assert imaging["started"] == "2004-08-26"
    [series] = imaging["series"]
    assert series["uid"] == dicom_dataset(US_RGB).SeriesInstanceUID
    assert series["numberOfInstances"] == 2
    assert {item["uid"] for item in series["instance"]} == {dicom_dataset(US_JPEG2K).SOPInstanceUID,
                                                             dicom_dataset(US_RGB).SOPInstanceUID}
    endpoint = fhir_get(client, hospital_token, f"/fhir/{imaging['endpoint'][0]['reference']}")
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    assert endpoint["address"] == "/dicomweb"


def test_the_patient_is_created_once_tagged_and_owned_by_the_sender(client, web, hospital_token):
    ct = dicom_dataset(CT)

    web.store_instances(datasets=[ct])
    web.store_instances(datasets=[new_study_copy(ct)])

    patients = Resource.objects.filter(resource_type="Patient")
    assert patients.count() == 1
    patient = json.loads(patients.get().text)
    assert patient["meta"]["tag"] == [AUTO_CREATED_TAG]
    assert patient["identifier"] == [{"system": f"urn:carrack:organization:{HOSPITAL}:patient-id",
                                      "value": "1CT1"}]
    assert patient["name"] == [{"family": "CompressedSamples", "given": ["CT1"]}]
    assert patients.get().organization_id == HOSPITAL
    bundle = fhir_get(client, hospital_token, f"/fhir/ImagingStudy?patient={patient['id']}")
    assert bundle["total"] == 2 if "total" in bundle else len(bundle["entry"]) == 2


def test_an_existing_patient_with_the_identifier_is_linked_not_duplicated(client, web, hospital_token):
    ct = dicom_dataset(CT)
    existing = {"resourceType": "Patient", "identifier": [
        {"system": f"urn:carrack:organization:{HOSPITAL}:patient-id", "value": "1CT1"}]}
    created = client.post("/fhir/Patient", json.dumps(existing), content_type="application/fhir+json",
                          HTTP_AUTHORIZATION=f"Bearer {hospital_token}")
    assert created.status_code == 201

    web.store_instances(datasets=[ct])

    assert Resource.objects.filter(resource_type="Patient").count() == 1
    assert Study.objects.get().patient_id == created.json()["id"]


def test_issuer_of_patient_id_is_the_identifier_system(web):
    dataset = dicom_dataset(CT)
    dataset.IssuerOfPatientID = "1.2.826.0.1.3680043.9.7777"

    web.store_instances(datasets=[dataset])

    patient = json.loads(Resource.objects.get(resource_type="Patient").text)
    assert patient["identifier"] == [{"system": "urn:oid:1.2.826.0.1.3680043.9.7777", "value": "1CT1"}]


def test_a_later_instance_updates_the_imaging_study(client, web, hospital_token):
    web.store_instances(datasets=[dicom_dataset(US_JPEG2K)])
    study = Study.objects.get()
    first = fhir_get(client, hospital_token, f"/fhir/ImagingStudy/{study.fhir_id}")

    web.store_instances(datasets=[dicom_dataset(US_RGB)])

    second = fhir_get(client, hospital_token, f"/fhir/ImagingStudy/{study.fhir_id}")
    assert first["numberOfInstances"] == 1 and second["numberOfInstances"] == 2
    assert int(second["meta"]["versionId"]) == int(first["meta"]["versionId"]) + 1
    assert not Study.objects.get().fhir_stale


def test_a_resent_instance_writes_no_new_version(client, web, hospital_token):
    web.store_instances(datasets=[dicom_dataset(US_MULTIFRAME)])
    study = Study.objects.get()

    web.store_instances(datasets=[dicom_dataset(US_MULTIFRAME)])

    imaging = fhir_get(client, hospital_token, f"/fhir/ImagingStudy/{study.fhir_id}")
    assert imaging["meta"]["versionId"] == "1"
