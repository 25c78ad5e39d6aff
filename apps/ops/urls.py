"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` at the site root."""

from django.urls import URLPattern, URLResolver, path

from apps.ops import views

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("health", views.health, name="health"),
    path("health/live", views.health_live, name="health-live"),
    path("health/ready", views.health_ready, name="health-ready"),
    path("ops/ping", views.ping_create, name="ops-ping"),
    path("ops/ping/<str:probe_id>", views.ping_detail, name="ops-ping-detail"),
]
urlpatterns: list[URLPattern | URLResolver] = [
    path("metrics", views.prometheus_metrics, name="prometheus-metrics"),
]
