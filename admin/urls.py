"""URLs: the admin site under /admin/, a health check, and / redirecting to the admin."""

from django.contrib import admin as django_admin
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.generic import RedirectView


@login_not_required
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness plus a database round trip; tells nothing about the data."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # noqa: BLE001 - any database failure means "not healthy"
        return JsonResponse({"status": "unavailable"}, status=503)
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", django_admin.site.urls),
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
]
