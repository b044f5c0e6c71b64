"""DICOM studies as stored: metadata rows here, the instance files in object storage.

A ``Study`` belongs to one organization (the sender's) and one FHIR Patient, both set on
its first instance; ``organization_id`` and ``patient_id`` carry the same meaning (and
names) as on ``ehr.Resource`` so ``access.policy`` and ``ehr.rules`` filters apply to them unchanged.
Each study has one FHIR ImagingStudy (``fhir_id``) that ``imaging.services.study_sync_fhir``
rewrites from these rows; ``fhir_stale`` says a sync is due.

UIDs are unique per organization, not node-wide: two hospitals may each hold their own copy
of one study (a patient's CD, a shared referral), under the same Study, Series and SOP
Instance UIDs. ``Series`` and ``Instance`` repeat their study's ``organization_id`` so the
database can hold that rule (a unique constraint cannot reach through a join).
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models


class AttributesField(models.JSONField):
    """DICOM JSON of the kept attributes.

    Its placeholder keeps Django's bulk inserts on ``VALUES``: with ``UNNEST`` arrays psycopg
    escapes every quote of every JSON text in Python, which cost more than the rest of a row.
    """

    def get_placeholder(self, value, compiler, connection) -> str:
        return "%s"


class Study(models.Model):
    study_instance_uid = models.CharField(max_length=64, db_index=True)
    organization_id = models.CharField(max_length=64)
    patient_id = models.CharField(max_length=64)  # FHIR Patient id
    fhir_id = models.CharField(max_length=64, unique=True)  # FHIR ImagingStudy id
    fhir_stale = models.BooleanField(default=True)
    # DICOM patient identity as sent (the link to the Patient) and the study attributes QIDO matches.
    dicom_patient_id = models.CharField(max_length=64, blank=True)
    issuer_of_patient_id = models.CharField(max_length=64, blank=True)
    patient_name = models.CharField(max_length=324, blank=True)
    study_date = models.DateField(null=True)
    study_time = models.CharField(max_length=16, blank=True)
    accession_number = models.CharField(max_length=16, blank=True)
    study_id = models.CharField(max_length=16, blank=True)
    study_description = models.CharField(max_length=64, blank=True)
    modalities = ArrayField(models.CharField(max_length=16), default=list)
    # Study-level attributes of the first instance, as DICOM JSON (QIDO answers and includefield).
    attributes = AttributesField(default=dict)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["organization_id", "study_date"], name="study_org_date"),
            models.Index(fields=["patient_id"], name="study_patient"),
            models.Index(fields=["dicom_patient_id"], name="study_dicom_patient"),
            models.Index(fields=["accession_number"], name="study_accession"),
            models.Index(fields=["fhir_stale"], name="study_fhir_stale",
                         condition=models.Q(fhir_stale=True)),
        ]
        constraints = [models.UniqueConstraint(fields=["organization_id", "study_instance_uid"],
                                               name="study_organization_uid")]

    def __str__(self) -> str:
        return self.study_instance_uid


class Series(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    organization_id = models.CharField(max_length=64)  # the study's
    series_instance_uid = models.CharField(max_length=64, db_index=True)
    modality = models.CharField(max_length=16, blank=True)
    series_number = models.IntegerField(null=True)
    series_description = models.CharField(max_length=64, blank=True)
    attributes = AttributesField(default=dict)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization_id", "series_instance_uid"],
                                               name="series_organization_uid")]

    def __str__(self) -> str:
        return self.series_instance_uid


class Instance(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="instances")
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    organization_id = models.CharField(max_length=64)  # the study's
    sop_instance_uid = models.CharField(max_length=64, db_index=True)
    sop_class_uid = models.CharField(max_length=64)
    transfer_syntax_uid = models.CharField(max_length=64)
    instance_number = models.IntegerField(null=True)
    number_of_frames = models.PositiveIntegerField(default=1)
    rows = models.PositiveIntegerField(null=True)
    columns = models.PositiveIntegerField(null=True)
    # SHA-256 of the data set without its file meta: the same instance sent over DIMSE and
    # STOW-RS hashes the same, so a resend is recognised and a different content is not.
    content_sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField()
    storage_key = models.CharField(max_length=300)
    # Instance-level attributes as DICOM JSON without bulk data (WADO-RS metadata, QIDO).
    attributes = AttributesField(default=dict)
    created = models.DateTimeField(auto_now_add=True)
    # The de-identified copy made by ``imaging.deidentify_instance``, next to the original.
    deid_storage_key = models.CharField(max_length=300, blank=True)
    deid_sha256 = models.CharField(max_length=64, blank=True)
    deidentified_at = models.DateTimeField(null=True)
    deid_error = models.CharField(max_length=300, blank=True)
    # The copy's outbox: the row itself, written with the instance. NULL until its message
    # reached the broker (set after commit); ``imaging.deidentify_pending`` publishes the rows
    # still NULL, and those published long ago that still have no copy (a message lost).
    deid_queued_at = models.DateTimeField(null=True)

    class Meta:
        indexes = [models.Index(fields=["series", "instance_number"], name="instance_series_number"),
                   models.Index(fields=["created"], name="instance_deid_pending",
                                condition=models.Q(deid_storage_key="", deid_error=""))]
        constraints = [models.UniqueConstraint(fields=["organization_id", "sop_instance_uid"],
                                               name="instance_organization_uid")]

    def __str__(self) -> str:
        return self.sop_instance_uid
