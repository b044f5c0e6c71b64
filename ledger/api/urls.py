"""Routes under /api/ledger/."""

from django.urls import path

from .views import AuditEventProofView, ConsentProofView

app_name = "ledger"

urlpatterns = [
    path("audit-events/<str:id>/proof", AuditEventProofView.as_view(), name="audit-event-proof"),
    path("consents/<str:id>/proof", ConsentProofView.as_view(), name="consent-proof"),
]
