"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` are the console pages."""

from django.urls import URLPattern, URLResolver, include, path

from apps.orgs import views

api_urlpatterns: list[URLPattern | URLResolver] = []

console_urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.dashboard, name="dashboard"),
    path("orgs/new/", views.create, name="create"),
    path("orgs/switch/", views.switch, name="switch"),
]
urlpatterns: list[URLPattern | URLResolver] = [path("", include((console_urlpatterns, "orgs")))]
