"""WebSocket routes; each app contributes `websocket_urlpatterns` from its own routing module."""

from django.urls import URLPattern, URLResolver, re_path

from apps.tasks import routing as tasks_routing
from apps.tasks.consumers import UnknownPathConsumer

websocket_urlpatterns: list[URLPattern | URLResolver] = [
    *tasks_routing.websocket_urlpatterns,
    # Last: any other path (a task id that is not a UUID included) closes with 4404 like a missing task, instead
    # of the ValueError that Channels' URLRouter raises for a path it cannot route (an HTTP 500 at the handshake).
    re_path(r"", UnknownPathConsumer.as_asgi()),
]
