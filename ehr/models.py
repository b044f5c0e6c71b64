"""FHIR resources as stored: the client's JSON text kept verbatim, search indexes derived from it.

``Resource`` holds the current version of each (type, id) and stays as a tombstone after a
delete; ``ResourceVersion`` holds every version for vread and history. The ``*Index``
tables hold the search values of the current version only and are rewritten on each
write, in the same transaction.
"""

from decimal import Decimal

from django.contrib.postgres.indexes import OpClass
from django.db import models


class Resource(models.Model):
    resource_type = models.CharField(max_length=64)
    logical_id = models.CharField(max_length=64)
    version_id = models.PositiveIntegerField()
    last_updated = models.DateTimeField()
    deleted = models.BooleanField(default=False)
    # The stored JSON text: what the client sent, with the server's id and meta spliced in.
    text = models.TextField(blank=True)
    # Access control: the managing organization (hospital) the resource belongs to, and the
    # patient whose compartment holds it (the Patient's own id for a Patient), both FHIR ids.
    organization_id = models.CharField(max_length=64, null=True)
    patient_id = models.CharField(max_length=64, null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["resource_type", "logical_id"], name="resource_type_id_unique"),
        ]
        indexes = [
            models.Index(fields=["resource_type", "last_updated"], name="resource_type_updated"),
            models.Index(fields=["organization_id", "resource_type"], name="resource_organization"),
            models.Index(fields=["patient_id", "resource_type"], name="resource_patient"),
        ]

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.logical_id}/_history/{self.version_id}"


class ResourceVersion(models.Model):
    """One version of a resource; a delete is a version with ``deleted`` set and no text."""

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="versions")
    resource_type = models.CharField(max_length=64)
    logical_id = models.CharField(max_length=64)
    version_id = models.PositiveIntegerField()
    last_updated = models.DateTimeField()
    deleted = models.BooleanField(default=False)
    method = models.CharField(max_length=8)  # POST, PUT, PATCH or DELETE, for history entries
    text = models.TextField(blank=True)
    # Whose compartment held this version and who owned it: each version is checked against
    # its own compartment (a resource moved from patient A to B keeps A's versions A's).
    patient_id = models.CharField(max_length=64, null=True)
    organization_id = models.CharField(max_length=64, null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["resource", "version_id"], name="version_unique"),
        ]
        indexes = [
            models.Index(fields=["resource_type", "-last_updated"], name="version_type_updated"),
            models.Index(fields=["-last_updated"], name="version_updated"),
        ]


class SearchIndex(models.Model):
    """Columns shared by every index table: which resource, which search parameter."""

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="+")
    resource_type = models.CharField(max_length=64)
    param = models.CharField(max_length=64)

    class Meta:
        abstract = True


class StringIndex(SearchIndex):
    value = models.TextField()  # normalized: case-folded, accents removed
    exact = models.TextField()  # as written, for :exact

    class Meta:
        indexes = [
            models.Index(OpClass("value", name="text_pattern_ops"), "resource_type", "param",
                         name="string_value_prefix"),
        ]


class TokenIndex(SearchIndex):
    system = models.TextField(null=True)
    code = models.TextField(null=True)
    text = models.TextField(null=True)  # display / CodeableConcept.text, for :text

    class Meta:
        indexes = [
            models.Index(fields=["resource_type", "param", "code", "system"], include=["resource"],
                         name="token_code"),
        ]


class DateIndex(SearchIndex):
    low = models.DateTimeField(null=True)  # inclusive start of the value's range, None = open
    high = models.DateTimeField(null=True)  # inclusive end, None = open

    class Meta:
        indexes = [
            models.Index(fields=["resource_type", "param", "low"], name="date_low"),
            models.Index(fields=["resource_type", "param", "high"], name="date_high"),
        ]


class ReferenceIndex(SearchIndex):
    target_type = models.CharField(max_length=64, null=True)
    target_id = models.CharField(max_length=64, null=True)
    url = models.TextField(null=True)  # absolute or canonical references, as written

    class Meta:
        indexes = [
            models.Index(fields=["resource_type", "param", "target_id", "target_type"], include=["resource"],
                         name="reference_target"),
            models.Index(fields=["target_type", "target_id"], name="reference_reverse"),
        ]


class ExactDecimalField(models.Field):
    """PostgreSQL ``numeric`` without typmod: a decimal kept with the digits it was given."""

    description = "Decimal of any precision (numeric without typmod)"

    def db_type(self, connection) -> str:
        return "numeric"

    def to_python(self, value):
        return value if value is None or isinstance(value, Decimal) else Decimal(str(value))

    def get_prep_value(self, value):
        return self.to_python(super().get_prep_value(value))


class QuantityIndex(SearchIndex):
    value = ExactDecimalField()  # ehr.numeric.index_decimal of the value as written
    system = models.TextField(null=True)
    code = models.TextField(null=True)
    unit = models.TextField(null=True)

    class Meta:
        indexes = [models.Index(fields=["resource_type", "param", "value"], name="quantity_value")]


class NumberIndex(SearchIndex):
    value = ExactDecimalField()  # ehr.numeric.index_decimal of the value as written

    class Meta:
        indexes = [models.Index(fields=["resource_type", "param", "value"], name="number_value")]


class UriIndex(SearchIndex):
    value = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["resource_type", "param", "value"], name="uri_value")]


# The index table of each search parameter type.
INDEX_MODELS: dict[str, type[SearchIndex]] = {
    "string": StringIndex,
    "token": TokenIndex,
    "date": DateIndex,
    "reference": ReferenceIndex,
    "quantity": QuantityIndex,
    "number": NumberIndex,
    "uri": UriIndex,
}


# Subscription state (channels, the notification outbox, deliveries) lives with its code.
from ehr.subscriptions.models import SubscriptionChannel, SubscriptionDelivery, SubscriptionEvent  # noqa: E402, F401
