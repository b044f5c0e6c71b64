"""AccessProfile and ClientScopes move from ``ehr`` to ``access``: state only, the tables stay.

The rows are not copied: ``db_table`` keeps ``ehr_accessprofile`` and ``ehr_clientscopes``,
which ``ehr``'s migrations 0002 and 0003 created (``ehr/migrations/0006_access_models_moved.py``
removes the models from ``ehr``'s state). The content types follow the models, so permissions
granted on them are kept.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

MOVED = ("accessprofile", "clientscopes")


def content_types_move(apps, schema_editor, *, source: str = "ehr", target: str = "access") -> None:
    """Relabel the moved models' content types (only where the target has none yet)."""
    content_type = apps.get_model("contenttypes", "ContentType")
    for model in MOVED:
        if not content_type.objects.filter(app_label=target, model=model).exists():
            content_type.objects.filter(app_label=source, model=model).update(app_label=target)


def content_types_back(apps, schema_editor) -> None:
    content_types_move(apps, schema_editor, source="access", target="ehr")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("ehr", "0005_version_compartment"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        migrations.swappable_dependency(settings.OAUTH2_PROVIDER_APPLICATION_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AccessProfile",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                                   verbose_name="ID")),
                        ("role", models.CharField(choices=[
                            ("clinician", "Clinician"), ("integration", "Integration"),
                            ("researcher", "Researcher"), ("patient", "Patient"),
                            ("dpo", "data protection officer"), ("admin", "Admin")], max_length=16)),
                        ("organization_id", models.CharField(blank=True, max_length=64, null=True)),
                        ("practitioner_id", models.CharField(blank=True, max_length=64, null=True)),
                        ("patient_id", models.CharField(blank=True, max_length=64, null=True)),
                        ("user", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE,
                                                      related_name="access_profile",
                                                      to=settings.AUTH_USER_MODEL)),
                    ],
                    options={"db_table": "ehr_accessprofile"},
                ),
                migrations.CreateModel(
                    name="ClientScopes",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                                   verbose_name="ID")),
                        ("scopes", models.TextField(
                            help_text="Space-separated SMART scopes, e.g. 'system/*.cruds'")),
                        ("application", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE,
                                                             related_name="client_scopes",
                                                             to=settings.OAUTH2_PROVIDER_APPLICATION_MODEL)),
                    ],
                    options={"db_table": "ehr_clientscopes"},
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_types_move, content_types_back),
    ]
