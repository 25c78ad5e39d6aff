"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` are the console pages."""

from django.urls import URLPattern, URLResolver, include, path
from rest_framework.routers import SimpleRouter

from apps.orgs import api, views

router = SimpleRouter(trailing_slash=False)
router.register("keys", api.APIKeyViewSet, basename="api-key")

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("usage", api.UsageView.as_view(), name="usage"),
    *router.urls,
]

console_urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.dashboard, name="dashboard"),
    path("orgs/new/", views.create, name="create"),
    path("orgs/switch/", views.switch, name="switch"),
]
urlpatterns: list[URLPattern | URLResolver] = [path("", include((console_urlpatterns, "orgs")))]
