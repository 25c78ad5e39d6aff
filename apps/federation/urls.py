"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` are the console pages."""

from django.urls import URLPattern, URLResolver, include, path
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
console_urlpatterns: list[URLPattern | URLResolver] = [
    path("federation/", views.console_peers, name="peers"),
    path("federation/peers/", views.console_peer_create, name="peer-create"),
    path("federation/peers/<slug:name>/keys/<str:operation>/", views.console_key_action, name="peer-key"),
    path("federation/peers/<slug:name>/status/", views.console_peer_status, name="peer-status"),
    path("federation/contacts/", views.console_contacts, name="contacts"),
    path("federation/contacts/<int:contact_id>/delete/", views.console_contact_delete, name="contact-delete"),
    path("federation/policies/", views.console_policies, name="policies"),
    path("federation/policies/<int:policy_id>/delete/", views.console_policy_delete, name="policy-delete"),
    path("federation/outbox/", views.console_outbox, name="outbox"),
    path("federation/messages/<str:message_id>/", views.console_message, name="message"),
    path("federation/inbox/", views.console_inbox, name="inbox"),
    path("federation/dlq/", views.console_dlq, name="dlq"),
    path("federation/dlq/apply/", views.console_dlq_apply, name="dlq-apply"),
    path("federation/audit/", views.console_audit, name="audit"),
    path("federation/remote-tasks/", views.console_remote_tasks, name="remote-tasks"),
    path("federation/remote-tasks/<str:remote_id>/", views.console_remote_task, name="remote-task"),
]
urlpatterns: list[URLPattern | URLResolver] = [path("", include((console_urlpatterns, "federation")))]
