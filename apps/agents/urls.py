"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` are the console pages."""

from django.urls import URLPattern, URLResolver, include, path

from apps.agents import views

api_urlpatterns: list[URLPattern | URLResolver] = []

console_urlpatterns: list[URLPattern | URLResolver] = [
    path("agents/", views.agent_list, name="list"),
    path("agents/register/", views.register, name="register"),
    path("agents/register/preview/", views.preview, name="preview"),
    path("agents/demo/", views.assign_demo, name="assign-demo"),
    path("agents/<str:agent_id>/", views.detail, name="detail"),
    path("agents/<str:agent_id>/refresh/", views.refresh, name="refresh"),
    path("agents/<str:agent_id>/visibility/", views.visibility, name="visibility"),
    path("agents/<str:agent_id>/delete/", views.delete, name="delete"),
    path("marketplace/", views.marketplace, name="marketplace"),
]
urlpatterns: list[URLPattern | URLResolver] = [path("", include((console_urlpatterns, "agents")))]
