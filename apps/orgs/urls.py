"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` are the console pages."""

from django.urls import URLPattern, URLResolver, include, path
from rest_framework.routers import SimpleRouter

from apps.orgs import api, views

router = SimpleRouter(trailing_slash=False)
router.register("orgs", api.OrganizationViewSet, basename="org")
router.register("members", api.MemberViewSet, basename="member")
router.register("invitations", api.InvitationViewSet, basename="invitation")
router.register("keys", api.APIKeyViewSet, basename="api-key")
router.register("audit", api.OrgAuditEventViewSet, basename="audit-event")

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("usage", api.UsageView.as_view(), name="usage"),
    # Before the router: "invitations/accept" must not be read as the invitation with pk "accept".
    path("invitations/accept", api.AcceptInvitationView.as_view(), name="invitation-accept"),
    *router.urls,
]

console_urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.dashboard, name="dashboard"),
    path("orgs/new/", views.create, name="create"),
    path("orgs/switch/", views.switch, name="switch"),
    path("org/settings/", views.settings_page, name="settings"),
    path("org/delete/", views.delete_org, name="delete"),
    path("org/members/", views.members, name="members"),
    path("org/members/<int:membership_id>/role/", views.change_member_role, name="member-role"),
    path("org/members/<int:membership_id>/remove/", views.remove_member, name="member-remove"),
    path("org/invitations/", views.invite, name="invite"),
    path("org/invitations/<int:invitation_id>/revoke/", views.revoke_invitation, name="invitation-revoke"),
    path("invitations/<str:token>/", views.accept_invitation, name="invitation-accept"),
    path("org/usage/", views.usage, name="usage"),
    path("org/keys/", views.keys, name="keys"),
    path("org/keys/<int:key_id>/rotate/", views.rotate_key, name="key-rotate"),
    path("org/keys/<int:key_id>/revoke/", views.revoke_key, name="key-revoke"),
    path("org/audit/", views.audit, name="audit"),
]
urlpatterns: list[URLPattern | URLResolver] = [path("", include((console_urlpatterns, "orgs")))]
