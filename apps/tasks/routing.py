from django.urls import URLPattern, URLResolver, path

from apps.tasks import consumers

websocket_urlpatterns: list[URLPattern | URLResolver] = [
    path("ws/tasks/<uuid:task_id>/", consumers.TaskTimelineConsumer.as_asgi()),
    path("ws/org/", consumers.OrgTasksConsumer.as_asgi()),
]
