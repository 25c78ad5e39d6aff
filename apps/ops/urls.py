"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` are the console pages."""

from django.urls import URLPattern, URLResolver, path

from apps.ops import views

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("health/live", views.health_live, name="health-live"),
]
urlpatterns: list[URLPattern | URLResolver] = []
