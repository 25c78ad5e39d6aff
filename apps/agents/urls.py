"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` are the console pages."""

from django.urls import URLPattern, URLResolver, include, path
from rest_framework.routers import SimpleRouter

from apps.agents import api, views

router = SimpleRouter(trailing_slash=False)
router.register("agents", api.AgentViewSet, basename="agent")

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("marketplace", api.MarketplaceViewSet.as_view({"get": "list"}), name="agent-marketplace"),
    *router.urls,
]

console_urlpatterns: list[URLPattern | URLResolver] = [
    path("agents/", views.agent_list, name="list"),
    path("agents/register/", views.register, name="register"),
    path("agents/register/preview/", views.preview, name="preview"),
    path("agents/register/manual/", views.register_manual, name="register-manual"),
    path("agents/demo/", views.assign_demo, name="assign-demo"),
    path("agents/<str:agent_id>/", views.detail, name="detail"),
    path("agents/<str:agent_id>/refresh/", views.refresh, name="refresh"),
    path("agents/<str:agent_id>/visibility/", views.visibility, name="visibility"),
    path("agents/<str:agent_id>/delete/", views.delete, name="delete"),
    path("marketplace/", views.marketplace, name="marketplace"),
]
urlpatterns: list[URLPattern | URLResolver] = [path("", include((console_urlpatterns, "agents")))]
