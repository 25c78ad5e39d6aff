"""WebSocket routes; each app contributes `websocket_urlpatterns` from its own routing module."""

from django.urls import URLPattern, URLResolver

from apps.tasks import routing as tasks_routing

websocket_urlpatterns: list[URLPattern | URLResolver] = [*tasks_routing.websocket_urlpatterns]
