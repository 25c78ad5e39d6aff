"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` are the console pages."""

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from apps.agents import api

router = SimpleRouter(trailing_slash=False)
router.register("agents", api.AgentViewSet, basename="agent")

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("marketplace", api.MarketplaceViewSet.as_view({"get": "list"}), name="marketplace"),
    *router.urls,
]
urlpatterns: list[URLPattern | URLResolver] = []
