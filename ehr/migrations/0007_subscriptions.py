"""Subscriptions (R4 rest-hook): channel rows, the notification outbox, deliveries. New tables only."""


import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('ehr', '0006_access_models_moved'),
    ]

    operations = [
        migrations.CreateModel(
            name='SubscriptionEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('resource_type', models.CharField(max_length=64)),
                ('logical_id', models.CharField(max_length=64)),
                ('version_id', models.PositiveIntegerField()),
                ('recorded', models.DateTimeField()),
            ],
        ),
        migrations.CreateModel(
            name='SubscriptionChannel',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('logical_id', models.CharField(max_length=64, unique=True)),
                ('organization_id', models.CharField(max_length=64, null=True)),
                ('status', models.CharField(max_length=16)),
                ('criteria_type', models.CharField(max_length=64)),
                ('criteria', models.TextField()),
                ('endpoint', models.TextField()),
                ('payload', models.CharField(blank=True, max_length=64)),
                ('headers', models.JSONField(default=list)),
                ('failures', models.PositiveIntegerField(default=0)),
                ('error', models.TextField(blank=True)),
                ('updated', models.DateTimeField(auto_now=True)),
                ('resource', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='ehr.resource')),
            ],
        ),
        migrations.CreateModel(
            name='SubscriptionDelivery',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('sequence', models.PositiveBigIntegerField()),
                ('resource_type', models.CharField(max_length=64)),
                ('logical_id', models.CharField(max_length=64)),
                ('version_id', models.PositiveIntegerField()),
                ('delivered', models.DateTimeField(null=True)),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('next_attempt', models.DateTimeField()),
                ('channel', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='ehr.subscriptionchannel')),
            ],
        ),
        migrations.AddIndex(
            model_name='subscriptionchannel',
            index=models.Index(fields=['status', 'criteria_type'], name='subscription_status_type'),
        ),
        migrations.AddIndex(
            model_name='subscriptiondelivery',
            index=models.Index(condition=models.Q(('delivered__isnull', True)), fields=['channel', 'sequence'], name='delivery_pending'),
        ),
        migrations.AddConstraint(
            model_name='subscriptiondelivery',
            constraint=models.UniqueConstraint(fields=('channel', 'sequence'), name='delivery_sequence_unique'),
        ),
    ]
