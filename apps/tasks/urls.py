"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` are the console pages."""

from django.urls import URLPattern, URLResolver, include, path
from rest_framework.routers import SimpleRouter

from apps.tasks import views
from apps.tasks.api import TaskViewSet

router = SimpleRouter(trailing_slash=False)  # like every API route; a trailing slash is tolerated by api_fallback
router.register("tasks", TaskViewSet, basename="task")

api_urlpatterns: list[URLPattern | URLResolver] = list(router.urls)
console_urlpatterns: list[URLPattern | URLResolver] = [
    path("tasks/", views.task_list, name="list"),
    path("tasks/new/", views.create, name="create"),
    path("tasks/<str:task_id>/", views.detail, name="detail"),
    path("tasks/<str:task_id>/cancel/", views.cancel, name="cancel"),
    path("tasks/<str:task_id>/reply/", views.follow_up, name="reply"),
]
urlpatterns: list[URLPattern | URLResolver] = [path("", include((console_urlpatterns, "tasks")))]
