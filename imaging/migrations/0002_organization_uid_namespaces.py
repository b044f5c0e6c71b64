"""UIDs unique per organization: each hospital may hold its own copy of a study.

Series and instances get their study's ``organization_id`` (copied from the study, so every
existing row keeps its owner), the node-wide unique indexes on the three UIDs become plain
indexes, and (organization, UID) is unique instead. Nothing is dropped: existing rows,
storage keys and files stay as they are. Going back re-creates the node-wide unique
indexes, which fails (and changes nothing) once two organizations hold one UID.
"""

from django.db import migrations, models

COPY_OWNER = """
UPDATE imaging_series AS se SET organization_id = s.organization_id
FROM imaging_study AS s WHERE s.id = se.study_id;
UPDATE imaging_instance AS i SET organization_id = s.organization_id
FROM imaging_study AS s WHERE s.id = i.study_id;
"""


class Migration(migrations.Migration):

    dependencies = [
        ("imaging", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="series",
            name="organization_id",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="instance",
            name="organization_id",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        migrations.RunSQL(COPY_OWNER, reverse_sql=migrations.RunSQL.noop),
        migrations.AlterField(
            model_name="study",
            name="study_instance_uid",
            field=models.CharField(db_index=True, max_length=64),
        ),
        migrations.AlterField(
            model_name="series",
            name="series_instance_uid",
            field=models.CharField(db_index=True, max_length=64),
        ),
        migrations.AlterField(
            model_name="instance",
            name="sop_instance_uid",
            field=models.CharField(db_index=True, max_length=64),
        ),
        migrations.AddConstraint(
            model_name="study",
            constraint=models.UniqueConstraint(fields=("organization_id", "study_instance_uid"),
                                               name="study_organization_uid"),
        ),
        migrations.AddConstraint(
            model_name="series",
            constraint=models.UniqueConstraint(fields=("organization_id", "series_instance_uid"),
                                               name="series_organization_uid"),
        ),
        migrations.AddConstraint(
            model_name="instance",
            constraint=models.UniqueConstraint(fields=("organization_id", "sop_instance_uid"),
                                               name="instance_organization_uid"),
        ),
    ]
