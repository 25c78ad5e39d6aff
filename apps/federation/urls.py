"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` are the console pages."""

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from apps.federation import api, views

router = SimpleRouter(trailing_slash=False)
router.register("federation/peers", api.PeerViewSet, basename="federation-peer")
router.register("federation/contacts", api.ContactViewSet, basename="federation-contact")
router.register("federation/policies", api.PolicyViewSet, basename="federation-policy")
router.register("federation/messages", api.MessageViewSet, basename="federation-message")
router.register("federation/dlq", api.DeadLetterViewSet, basename="federation-dlq")
router.register("federation/inbox", api.InboxViewSet, basename="federation-inbox-entry")
router.register("federation/audit", api.AuditViewSet, basename="federation-audit")
router.register("federation/remote-tasks", api.RemoteTaskViewSet, basename="federation-remote-task")

api_urlpatterns: list[URLPattern | URLResolver] = [
    # Peers POST here, authenticated by the link signature (not an API key): see views.inbox.
    path("federation/receive/<slug:sender>", views.inbox, name="federation-inbox"),
    *router.urls,
]
urlpatterns: list[URLPattern | URLResolver] = []
