"""Routes under /api/jobs/."""

from django.urls import path

from .views import JobView

app_name = "jobs"

urlpatterns = [
    path("<str:id>", JobView.as_view(), name="job"),
]
