"""The ledger's own mirror of who manages each patient, filled with the live Patients of ehr.

The consent check compared a token's Consent with the patient's owner by joining ehr's
tables; it now reads this table, which ehr keeps on every write. Filled here from the
Patients not deleted, so the check answers the same right after the upgrade.
"""

from django.db import migrations, models

FILL = """
INSERT INTO ledger_patientowner (patient_id, organization_id)
SELECT logical_id, organization_id FROM ehr_resource WHERE resource_type = 'Patient' AND NOT deleted
"""


class Migration(migrations.Migration):

    dependencies = [
        ("ledger", "0006_anchor_batch_reorgs"),
        ("ehr", "0005_version_compartment"),
    ]

    operations = [
        migrations.CreateModel(
            name="PatientOwner",
            fields=[
                ("patient_id", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("organization_id", models.CharField(max_length=64, null=True)),
            ],
        ),
        migrations.RunSQL(FILL, reverse_sql=migrations.RunSQL.noop),
    ]
