"""Routes under /api/ledger/."""

from django.urls import path

from .views import AuditEventProofView

app_name = "ledger"

urlpatterns = [
    path("audit-events/<str:id>/proof", AuditEventProofView.as_view(), name="audit-event-proof"),
]
