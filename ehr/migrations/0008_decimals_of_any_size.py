"""Number and quantity index values as PostgreSQL ``numeric`` without typmod (was numeric(38, 12)).

An in-place ``ALTER COLUMN value TYPE numeric USING value::numeric``: every row keeps its value
(widening loses nothing), PostgreSQL rebuilds the ``number_value`` and ``quantity_value``
indexes on the new type in the same statement, and the covering indexes of 0004 (token and
reference tables) are untouched. Rows written before keep the 12 decimals numeric(38, 12) gave
them (equal values, so searches match as before); values clamped or rounded then are indexed
exactly on the resource's next write. Going back narrows the column and fails on a value
numeric(38, 12) cannot hold, rather than change it.
"""

import ehr.models
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('ehr', '0007_subscriptions'),
    ]

    operations = [
        migrations.AlterField(
            model_name='numberindex',
            name='value',
            field=ehr.models.ExactDecimalField(),
        ),
        migrations.AlterField(
            model_name='quantityindex',
            name='value',
            field=ehr.models.ExactDecimalField(),
        ),
    ]
