"""AccessProfile and ClientScopes now belong to ``access`` (``access/migrations/0001_initial.py``).

State only: the tables ``ehr_accessprofile`` and ``ehr_clientscopes`` and their rows stay
where they are, now read through ``access.models``.
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("ehr", "0005_version_compartment"),
        ("access", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="AccessProfile"),
                migrations.DeleteModel(name="ClientScopes"),
            ],
            database_operations=[],
        ),
    ]
