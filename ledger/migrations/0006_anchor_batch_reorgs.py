"""Anchoring survives reorganizations: a batch remembers when the chain lost it (issue 12).

``created`` is set by the anchoring tick's clock (like ``sent_at`` and ``confirmed_at``)
instead of the database's insert time; existing rows keep their values. Nothing is dropped.
"""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("ledger", "0005_audit_hash_version")]

    operations = [
        migrations.AlterField(
            model_name="anchorbatch", name="created",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AddField(model_name="anchorbatch", name="lost_at", field=models.DateTimeField(null=True)),
        migrations.AddField(model_name="anchorbatch", name="reorgs",
                            field=models.PositiveIntegerField(default=0)),
    ]
