"""WebSocket routes; each app contributes `websocket_urlpatterns` from its own routing module."""

from django.urls import URLPattern, URLResolver

websocket_urlpatterns: list[URLPattern | URLResolver] = []
