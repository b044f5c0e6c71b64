"""Each version records its own compartment and owner; existing versions take their resource's."""

from django.db import migrations, models

BACKFILL = """
UPDATE ehr_resourceversion v SET patient_id = r.patient_id, organization_id = r.organization_id
FROM ehr_resource r WHERE v.resource_id = r.id
"""


class Migration(migrations.Migration):
    dependencies = [("ehr", "0004_covering_search_indexes")]

    operations = [
        migrations.AddField(model_name="resourceversion", name="patient_id",
                            field=models.CharField(max_length=64, null=True)),
        migrations.AddField(model_name="resourceversion", name="organization_id",
                            field=models.CharField(max_length=64, null=True)),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
    ]
