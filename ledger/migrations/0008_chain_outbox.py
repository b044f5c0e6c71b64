"""Consent transactions join the shared chain outbox (``ledger.chain.outbox.ChainTransaction``).

Only new nullable columns (the fees a replacement must outbid, the block hash a reorg check
compares, the hashes of superseded signings); no table or column moves, no data is touched.
Rows sent before this migration have no fees recorded and are never replaced for an
underpriced offer (their offer is unknown); they are resent as before. It follows
0007_consent_owner (merged first, straight after 0006), so the app keeps one leaf; no 0007.
"""

import django.contrib.postgres.fields
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("ledger", "0007_consent_owner"),
    ]

    operations = [
        migrations.AddField(
            model_name="consentchaintx",
            name="block_hash",
            field=models.CharField(max_length=66, null=True),
        ),
        migrations.AddField(
            model_name="consentchaintx",
            name="max_fee_per_gas",
            field=models.DecimalField(decimal_places=0, max_digits=40, null=True),
        ),
        migrations.AddField(
            model_name="consentchaintx",
            name="max_priority_fee_per_gas",
            field=models.DecimalField(decimal_places=0, max_digits=40, null=True),
        ),
        migrations.AddField(
            model_name="consentchaintx",
            name="replaced_tx_hashes",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.CharField(max_length=66), blank=True, default=list, size=None),
        ),
    ]
