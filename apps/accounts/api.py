"""Account API: who am I, registration, password change and reset (the console uses the same actions)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import update_session_auth_hash
from rest_framework import permissions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts import actions
from apps.accounts.serializers import (
    MeSerializer,
    PasswordChangeSerializer,
    PasswordResetConfirmSerializer,
    PasswordResetSerializer,
    RegisterSerializer,
    UserSerializer,
)
from apps.core.api import RefuseUnreadBodyMixin, access_of, describe
from apps.core.http import header_text
from apps.core.permissions import Access
from apps.orgs.quotas import AnonymousRateThrottle
from apps.orgs.selectors import memberships_of


class MeView(RefuseUnreadBodyMixin, APIView):
    @describe(
        "The caller",
        action=None,
        notes="The signed-in person (or the creator of the API key), their orgs and roles, and the org, role and "
        "scopes this request acts with (`current`: null for a person who belongs to no org yet). With an API key, "
        "`memberships` holds only the key's org: a key acts for one org and does not reveal its creator's others.",
        responses={200: MeSerializer},
        errors={
            403: "`no_organization`: `X-Hermes-Org` names none of your organizations (as on every other endpoint)."
        },
    )
    def get(self, request: Request) -> Response:
        if header_text(request.headers.get("X-Hermes-Org")):
            # An org named and not found is refused as everywhere else, rather than answered with `current: null`
            # (which reads as "you are in no org"). Without the header, a person in no org yet gets their 200.
            access_of(request)
        user: Any = request.user
        access = request.auth
        key_org = access.org if isinstance(access, Access) and access.api_key is not None else None
        data = {
            "id": user.pk,
            "email": user.email,
            "name": user.name,
            "date_joined": user.date_joined,
            # A key is a credential for one org: it shows its creator's membership there and not the orgs they
            # belong to otherwise (as GET /orgs with a key lists only its org). A session shows them all.
            "memberships": memberships_of(user, org=key_org),
        }
        return Response(MeSerializer(data, context={"access": access}).data)


class PublicView(RefuseUnreadBodyMixin, APIView):
    """No authentication at all (a stale or bad key must not block signing up), a per-IP rate limit instead."""

    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = [AnonymousRateThrottle]


class RegisterView(PublicView):
    @describe(
        "Register an account",
        action=None,
        public=True,
        notes="Creates an active account. The password must pass the password validators (400 with details per "
        "field otherwise). Rate-limited per client address.",
        request=RegisterSerializer,
        responses={201: UserSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = actions.register_user(**serializer.validated_data)
        return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED)


class PasswordChangeView(RefuseUnreadBodyMixin, APIView):
    @describe(
        "Change my password",
        action=None,
        notes="Session only (an API key cannot change its creator's password). Requires the current password; "
        "the session stays signed in.",
        request=PasswordChangeSerializer,
        responses={204: None},
        session_only="Change passwords with a signed-in session, not an API key.",
    )
    def post(self, request: Request) -> Response:
        serializer = PasswordChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = actions.change_password(user=request.user, **serializer.validated_data)
        update_session_auth_hash(request._request, user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PasswordResetView(PublicView):
    @describe(
        "Request a password reset",
        action=None,
        public=True,
        notes="Always 202, whether or not the address has an account (no account probing). When it does, an email "
        "with a link valid for PASSWORD_RESET_TIMEOUT seconds is sent.",
        request=PasswordResetSerializer,
        responses={202: None},
    )
    def post(self, request: Request) -> Response:
        serializer = PasswordResetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        actions.request_password_reset(**serializer.validated_data)
        return Response(status=status.HTTP_202_ACCEPTED)


class PasswordResetConfirmView(PublicView):
    @describe(
        "Set a new password with a reset token",
        action=None,
        public=True,
        notes="`uid` and `token` come from the emailed link (`/accounts/password-reset/<uid>/<token>/`). "
        "An expired or used token is a 400 on `token`.",
        request=PasswordResetConfirmSerializer,
        responses={204: None},
    )
    def post(self, request: Request) -> Response:
        serializer = PasswordResetConfirmSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        actions.reset_password(uidb64=data["uid"], token=data["token"], new_password=data["new_password"])
        return Response(status=status.HTTP_204_NO_CONTENT)
