"""The org API: organizations, members, invitations, API keys and usage (all under /api/v1/)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api import OrgScopedMixin, OrgScopedViewSet, RefuseUnreadBodyMixin, describe, require_action
from apps.core.errors import HermesAPIError, whole_number
from apps.core.idempotency import IdempotentCreateMixin
from apps.core.models import AuditEvent
from apps.core.permissions import Access
from apps.orgs import actions, quotas, selectors
from apps.orgs.models import APIKey, Invitation, Membership, Organization
from apps.orgs.serializers import (
    APIKeyCreateSerializer,
    APIKeyRotateSerializer,
    APIKeySerializer,
    InvitationAcceptSerializer,
    InvitationCreateSerializer,
    InvitationSerializer,
    IssuedAPIKeySerializer,
    MembershipSerializer,
    OrganizationCreateSerializer,
    OrganizationSerializer,
    OrganizationUpdateSerializer,
    OrgAuditEventSerializer,
    RoleChangeSerializer,
)

_KEYS_NOTE = (
    "Admins and owners (or a key with `org:admin`) manage every key of the org. Everyone else, with a session, sees "
    "and may revoke the keys they created, whatever their role now (revoking only takes access away); creating "
    "and rotating keys takes `keys:own` (developers). Another person's key is a 404 for them."
)
_KEYS_ISSUE_REFUSAL = (
    "`role_forbidden`: with a session, creating and rotating keys takes `keys:own` (a developer, admin or owner)."
)
_IDEMPOTENCY_ERRORS = {
    400: "`invalid_idempotency_key`: a malformed `Idempotency-Key`.",
    409: "`idempotency_conflict`: the `Idempotency-Key` was used before with a different request.",
}


class APIKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):  # type: ignore[misc]
    model = APIKey
    serializer_class = APIKeySerializer

    def required_action(self, request: Request) -> str | None:
        if self.action in {"create", "rotate"}:
            return actions.key_issue_action(self.access)
        return actions.key_read_action(self.access)

    def scoped_queryset(self) -> QuerySet[Any]:
        return selectors.visible_api_keys(self.access)

    @describe("List API keys", action="org:admin", notes=_KEYS_NOTE)
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @describe("Read an API key", action="org:admin", notes=_KEYS_NOTE)
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    @describe(
        "Create an API key",
        action="org:admin",
        notes=_KEYS_NOTE + " The plaintext `key` is in this response only. Scopes cannot exceed the creator's role. "
        "Created with an API key, the new key does not exceed, outlive or out-rate that key: `expires_at` and "
        "`rate_limit_per_minute` left out are that key's, and asking for more (or null, none) is a 400 naming "
        "that key's value, as scopes beyond its own are.",
        request=APIKeyCreateSerializer,
        responses={201: IssuedAPIKeySerializer},
        errors={403: _KEYS_ISSUE_REFUSAL},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = APIKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = actions.create_api_key(access=self.access, **serializer.validated_data)
        body = IssuedAPIKeySerializer(issued.key, context={"plaintext": issued.plaintext}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @describe(
        "Rotate an API key",
        action="org:admin",
        notes=_KEYS_NOTE + " Issues a successor (plaintext in this response only) with the key's name, scopes, "
        "expiry and rate limit, and keeps the old key working for `grace_seconds`, after which it answers 401 "
        "`key_expired`. `scopes` gives the successor other scopes, within the rotating caller's as when creating a "
        "key (400 on `scopes`); the audit row `api_key.rotated` records the successor's scopes (and the old key's "
        "when they differ). A key whose creator is gone (`creator_gone`) may be rotated: the successor is issued under "
        "the rotating person. Rotated with an API key, the successor may not outlive or out-rate that key (400 on "
        "`expires_at` / `rate_limit_per_minute`).",
        request=APIKeyRotateSerializer,
        responses={201: IssuedAPIKeySerializer},
        errors={
            403: _KEYS_ISSUE_REFUSAL,
            409: "`key_already_rotated`: rotate its successor instead; `key_revoked`, `key_expired`: create a new key.",
        },
    )
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, pk: str | None = None) -> Response:
        key = self.get_object()
        serializer = APIKeyRotateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = actions.rotate_api_key(
            access=self.access,
            key=key,
            grace=timedelta(seconds=serializer.validated_data["grace_seconds"]),
            scopes=serializer.validated_data.get("scopes"),
        )
        body = IssuedAPIKeySerializer(issued.key, context={"plaintext": issued.plaintext}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @describe(
        "Revoke an API key",
        action="org:admin",
        notes=_KEYS_NOTE + " Immediate: the next request with the key is a 401 `key_revoked`.",
        request=None,
        responses={200: APIKeySerializer},
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        key = actions.revoke_api_key(access=self.access, key=self.get_object())
        return Response(APIKeySerializer(key).data)


# --- Organizations ---------------------------------------------------------------------------------------------


class OrganizationViewSet(RefuseUnreadBodyMixin, viewsets.GenericViewSet):
    """The caller's orgs. A session sees every org it belongs to (and acts in `{slug}` with its role there);
    an API key sees only its own org. Any other slug is a 404."""

    serializer_class = OrganizationSerializer
    queryset = Organization.objects.none()  # for the schema; get_queryset narrows to the caller's orgs
    lookup_field = "slug"
    lookup_value_regex = "[^/]+"
    # What changing each field of an org takes (partial_update).
    FIELD_ACTIONS = (("name", "org:admin"), ("plan", "org:billing"))

    def _roles(self) -> dict[int, str]:
        access = self.request.auth
        if isinstance(access, Access) and access.api_key is not None:
            return {access.org.pk: access.role}
        rows = Membership.objects.unscoped("a person's own memberships span orgs").filter(user=self.request.user)
        return dict(rows.values_list("organization_id", "role"))

    def get_queryset(self) -> QuerySet[Organization]:
        self.roles = self._roles()
        return Organization.objects.filter(pk__in=list(self.roles))

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "roles": getattr(self, "roles", {})}

    def access_in(self, org: Organization) -> Access:
        access = self.request.auth
        if isinstance(access, Access) and access.api_key is not None:
            return access
        return Access(org=org, role=self.roles[org.pk], user=self.request.user)

    @describe("List my organizations", action=None, notes="With an API key: only the key's org.")
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @describe(
        "Read an organization",
        action="org:read",
        notes="One of the caller's orgs, with the caller's role in it and its plan's limits.",
        responses={200: OrganizationSerializer},
    )
    def retrieve(self, request: Request, slug: str | None = None) -> Response:
        org = self.get_object()
        require_action(self.access_in(org), "org:read")
        return Response(self.get_serializer(org).data)

    @describe(
        "Create an organization",
        action=None,
        notes="Session only: the caller becomes its first owner. (An API key acts for one org and cannot create "
        "another.)",
        request=OrganizationCreateSerializer,
        responses={201: OrganizationSerializer},
        session_only="An API key acts for one org; create organizations with a signed-in session.",
    )
    def create(self, request: Request) -> Response:
        serializer = OrganizationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        org = actions.create_organization(user=request.user, **serializer.validated_data)
        self.roles = {org.pk: "owner"}
        return Response(self.get_serializer(org).data, status=status.HTTP_201_CREATED)

    @describe(
        "Update an organization",
        action="org:admin",
        notes="Renaming needs `org:admin`; changing `plan` needs `org:billing` (owners, session only).",
        request=OrganizationUpdateSerializer,
        responses={200: OrganizationSerializer},
        errors={
            403: "Changing `plan` needs `org:billing`, owners only: `session_required` with an API key (`org:billing` "
            "is no API-key scope), `role_forbidden` for anyone but an owner."
        },
    )
    def partial_update(self, request: Request, slug: str | None = None) -> Response:
        org = self.get_object()
        access = self.access_in(org)
        # What each field needs is checked whether or not its value changes, so a key learns what it lacks from
        # its first request, and org:admin alone renames (it used to need org:read too). Checked before the body
        # is, as every other write: a caller who may not update the org is told so, not to fix the body first.
        sent = request.data.keys() if isinstance(request.data, Mapping) else ()
        for needed in [needed for field, needed in self.FIELD_ACTIONS if field in sent] or ["org:admin"]:
            require_action(access, needed)
        serializer = OrganizationUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        org = actions.update_organization(access=access, **serializer.validated_data)
        return Response(self.get_serializer(org).data)

    @describe(
        "Delete an organization",
        action="org:delete",
        notes="Owners only; deletes every row of the org.",
        errors={409: "`org_in_use`: other orgs have tasks in progress on its public agents (`details.agents`)."},
    )
    def destroy(self, request: Request, slug: str | None = None) -> Response:
        org = self.get_object()
        actions.delete_organization(access=self.access_in(org))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Members -----------------------------------------------------------------------------------------------------


class MemberViewSet(  # type: ignore[misc]
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, OrgScopedViewSet
):
    """Members of the current org. Role changes are owners' (`org:roles`); admins remove non-owners; anyone may
    leave (DELETE their own membership); the last owner can neither leave nor be demoted (409 `last_owner`)."""

    model = Membership
    serializer_class = MembershipSerializer
    read_action = "org:read"
    # The finer rules (own membership, owners) are the actions'; these are the least any caller needs.
    required_actions = {"partial_update": "org:roles", "destroy": "org:read"}

    def required_action(self, request: Request) -> str | None:
        # Leaving (a DELETE of one's own membership) is every member's, with a session; through an API key,
        # removing anyone needs `org:admin` (actions.remove_member). `org:read` refused an admin key its own scope.
        if getattr(self, "action", None) == "destroy" and self.access.api_key is not None:
            return "org:admin"
        return super().required_action(request)

    def scoped_queryset(self) -> QuerySet[Any]:
        return super().scoped_queryset().select_related("user")

    @describe("List members", action="org:read", notes="The people of the current org with their roles.")
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @describe("Read a membership", action="org:read", notes="One member of the current org and their role.")
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    @describe(
        "Change a member's role",
        action="org:roles",
        request=RoleChangeSerializer,
        responses={200: MembershipSerializer},
        notes="Owners only. Demoting the last owner is a 409 `last_owner`.",
        errors={409: "`last_owner`: the org must keep an owner; make someone else one first."},
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        membership = self.get_object()
        serializer = RoleChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = actions.change_role(access=self.access, membership=membership, **serializer.validated_data)
        return Response(MembershipSerializer(membership).data)

    @describe(
        "Remove a member (or leave)",
        action="org:admin",
        notes="Admins remove developers and members; removing an owner needs `org:roles`. Anyone may remove their "
        "own membership (leave), except the last owner.",
        errors={
            403: "Removing someone else needs `org:admin`, and removing an owner `org:roles`: "
            "`session_required` when an API key removes an owner (`org:roles` is no API-key scope: an owner does it "
            "with a session).",
            409: "`last_owner`: the org must keep an owner; make someone else one first.",
        },
    )
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        actions.remove_member(access=self.access, membership=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Invitations -------------------------------------------------------------------------------------------------


class _Invite:
    """POST /invitations, below IdempotentCreateMixin in the MRO so a replayed Idempotency-Key never reaches it."""

    access: Any

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = InvitationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = actions.invite_member(access=self.access, **serializer.validated_data)
        return Response(InvitationSerializer(issued.invitation).data, status=status.HTTP_201_CREATED)


class InvitationViewSet(  # type: ignore[misc]
    IdempotentCreateMixin, _Invite, mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet
):
    model = Invitation
    serializer_class = InvitationSerializer
    read_action = "org:admin"
    write_action = "org:admin"

    def scoped_queryset(self) -> QuerySet[Any]:
        # Only the list filters: an invitation read or revoked by id is found whatever its state.
        return selectors.invitations(self.org, self._states() if self.action == "list" else ())

    def _states(self) -> list[str]:
        # Repeats for "any of these", as `status` does on tasks; an unknown state is a 400 naming the accepted ones
        # (it used to be ignored: the whole list, which reads as if the filter had worked).
        states = [state for state in self.request.query_params.getlist("state") if state]
        accepted = ", ".join(selectors.INVITATION_STATES)
        if unknown := [state for state in states if state not in selectors.INVITATION_STATES]:
            raise HermesAPIError(
                f"'state' must be one of: {accepted}.",
                code="invalid",
                details={"state": [f"Unknown state {', '.join(unknown)}: one of {accepted}."]},
            )
        return states

    @describe(
        "List invitations",
        action="org:admin",
        notes="The org's invitations, open and closed; filter by `state`.",
        parameters=[
            OpenApiParameter(
                "state",
                str,
                enum=list(selectors.INVITATION_STATES),
                many=True,
                description="Only invitations in this state; repeat it for any of several "
                "(`state=pending&state=expired`). Any other value is a 400.",
            )
        ],
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @describe("Read an invitation", action="org:admin", notes="One invitation and its state; never its token.")
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    @describe(
        "Invite someone by email",
        action="org:admin",
        notes="Emails a link with a single-use token (valid 7 days; only its digest is stored). Inviting an owner "
        "needs `org:roles`. Re-inviting an address replaces its open invitation: that one is revoked (its link stops "
        "working; audited as `invitation.revoked`, reason `replaced by a new invitation`). Simultaneous invitations "
        "of one address run one after the other, each replacing the one before. Honors `Idempotency-Key`.",
        request=InvitationCreateSerializer,
        responses={201: InvitationSerializer},
        errors={
            **_IDEMPOTENCY_ERRORS,
            403: "Inviting an owner needs `org:roles`: `session_required` with an API key (`org:roles` is no API-key "
            "scope: an owner invites owners with a session), `role_forbidden` for an admin.",
            409: "`already_member`: the address is a member already. " + _IDEMPOTENCY_ERRORS[409],
        },
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().create(request, *args, **kwargs)

    @describe(
        "Revoke an invitation",
        action="org:admin",
        notes="Its link stops working at once.",
        request=None,
        responses={200: InvitationSerializer},
        errors={
            409: "`invitation_closed`: it was accepted, revoked or has expired already; one replaced by a newer "
            "invitation to the same address says so, with the newer one's id in `details.replaced_by`."
        },
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        invitation = actions.revoke_invitation(access=self.access, invitation=self.get_object())
        return Response(InvitationSerializer(invitation).data)


class AcceptInvitationView(RefuseUnreadBodyMixin, APIView):
    @describe(
        "Accept an invitation",
        action=None,
        notes="Session only: the signed-in person joins the inviting org with the invited role. Their email must be "
        "the invited address (403 `invitation_email_mismatch`); an unknown token is a 404, an expired, revoked or "
        "used one a 409.",
        request=InvitationAcceptSerializer,
        responses={201: MembershipSerializer},
        session_only="Accept invitations with a signed-in session.",
        errors={
            403: "`session_required`: not with an API key; `invitation_email_mismatch`: the signed-in address is "
            "not the invited one.",
            404: "`invitation_unknown`: no invitation has this token.",
            409: "`invitation_expired`, `invitation_revoked`, `invitation_accepted`: ask for a new one; "
            "`already_member`.",
        },
    )
    def post(self, request: Request) -> Response:
        serializer = InvitationAcceptSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = actions.accept_invitation(user=request.user, token=serializer.validated_data["token"])
        return Response(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)


class UsageView(OrgScopedMixin, APIView):  # type: ignore[misc]
    read_action = "org:read"

    @describe(
        "Usage and limits of the current org",
        action="org:read",
        notes="The plan's limits, requests in the current minute, and accepted API calls and tasks per UTC day "
        "(today first, `days` days, at most 35). `available` is false when the counters cannot be read (Redis down).",
        parameters=[OpenApiParameter("days", int, description="How many days (1-35, default 7).")],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        days = whole_number(request.query_params.get("days"), "days", default=7, minimum=1, maximum=35)
        return Response(quotas.usage(self.org, days=days))


# --- Audit log ---------------------------------------------------------------------------------------------------

# An `action` filter longer than the column names no action: a 400 (a pasted wrong value), not an empty list.
AUDIT_ACTION_MAX_LENGTH = AuditEvent._meta.get_field("action").max_length or 80


@extend_schema_view(
    list=describe(
        "Read the audit log",
        action="org:audit",
        notes="Every change made in the org (tasks, agents, members, invitations, API keys, settings), newest first, "
        "cursor-paginated: who made it (`actor`, and `api_key` when made with one), the `action`, its target and "
        "`details`. Only this org's events, whoever asks. Filter by `action`.",
        parameters=[
            OpenApiParameter(
                "action",
                str,
                many=True,
                description="Only events of this action (`task.created`); repeat it for any of several "
                "(`action=api_key.created&action=api_key.revoked`). Actions are open-ended (every app names its "
                "own), so one that no event has matches nothing rather than being refused; only a value longer than "
                "any action (80 characters) is a 400.",
            )
        ],
    ),
)
class OrgAuditEventViewSet(mixins.ListModelMixin, OrgScopedViewSet):  # type: ignore[misc]
    model = AuditEvent
    serializer_class = OrgAuditEventSerializer
    read_action = "org:audit"

    def scoped_queryset(self) -> QuerySet[Any]:
        # AuditEvent keys its org by id (no `objects.for_org`): apps.core.audit.events_for_org is its scoped read.
        actions = [action for action in self.request.query_params.getlist("action") if action]
        if any(len(action) > AUDIT_ACTION_MAX_LENGTH for action in actions):
            raise HermesAPIError(
                f"'action' must be an action's name (at most {AUDIT_ACTION_MAX_LENGTH} characters, like task.created).",
                code="invalid",
                details={"action": [f"At most {AUDIT_ACTION_MAX_LENGTH} characters."]},
            )
        return selectors.audit_events(self.org, actions)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        assert page is not None  # the list is always paginated (DEFAULT_PAGINATION_CLASS)
        context = {**self.get_serializer_context(), "api_keys": selectors.api_keys_of_events(self.org, page)}
        return self.get_paginated_response(OrgAuditEventSerializer(page, many=True, context=context).data)
