"""Output shape of /api/jobs/{id}: what the starter may know of the job (never its params)."""

from rest_framework import serializers

from jobs.models import Job


class JobSerializer(serializers.ModelSerializer):
    progress = serializers.FloatField(
        allow_null=True, read_only=True,
        help_text="done / total, 0..1; null while the total is unknown")

    class Meta:
        model = Job
        fields = ["id", "kind", "status", "progress", "done", "total", "message", "result",
                  "attempts", "cancel_requested", "created", "started", "finished", "heartbeat"]
        read_only_fields = fields
