"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` are the console pages."""

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from apps.orgs import api

router = SimpleRouter(trailing_slash=False)
router.register("keys", api.APIKeyViewSet, basename="api-key")

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("usage", api.UsageView.as_view(), name="usage"),
    *router.urls,
]
urlpatterns: list[URLPattern | URLResolver] = []
