"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` are the console pages."""

from django.urls import URLPattern, URLResolver
from rest_framework.routers import SimpleRouter

from apps.tasks.api import TaskViewSet

router = SimpleRouter()
router.trailing_slash = "/?"  # the documented paths have no trailing slash; accept both
router.register("tasks", TaskViewSet, basename="task")

api_urlpatterns: list[URLPattern | URLResolver] = list(router.urls)
urlpatterns: list[URLPattern | URLResolver] = []
