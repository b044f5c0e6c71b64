"""The de-identified copy's outbox: ``Instance.deid_queued_at`` and an index of pending copies.

Adds a nullable column (existing rows get NULL: an instance without a copy is published by
the next sweep, one with a copy is untouched) and a partial index on the instances still
without a copy or a refusal, which is what the sweep reads. Nothing is changed or dropped.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("imaging", "0002_organization_uid_namespaces"),
    ]

    operations = [
        migrations.AddField(
            model_name="instance",
            name="deid_queued_at",
            field=models.DateTimeField(null=True),
        ),
        migrations.AddIndex(
            model_name="instance",
            index=models.Index(condition=models.Q(("deid_error", ""), ("deid_storage_key", "")),
                               fields=["created"], name="instance_deid_pending"),
        ),
    ]
