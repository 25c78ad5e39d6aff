"""Federation API (federation:read / federation:write).

Peers and their keys are instance-wide: every org may read them (without secrets), but changing a link also
requires a staff account, because it affects every org on the instance.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import OrgScopedViewSet
from apps.core.errors import HermesAPIError, one_of
from apps.core.idempotency import IdempotentCreateMixin
from apps.federation import actions
from apps.federation.models import (
    AuditEvent,
    Contact,
    FederationAuditEvent,
    InboxEntry,
    Message,
    Outbox,
    OutboxStatus,
    Peer,
    Policy,
    RemoteTask,
)
from apps.federation.serializers import (
    AddKeySerializer,
    AuditEventSerializer,
    BulkIdsSerializer,
    ContactSerializer,
    DeadLetterSerializer,
    InboxEntrySerializer,
    LinkKeySerializer,
    MessageSerializer,
    PeerSerializer,
    PeerStatusSerializer,
    PolicySerializer,
    RemoteTaskSerializer,
    RequestRemoteTaskSerializer,
    RetireKeySerializer,
    SendMessageSerializer,
)
from apps.federation.signing import decode_secret, encode_secret


class _FederationViewSet(OrgScopedViewSet):
    read_action = "federation:read"
    write_action = "federation:write"


class PeerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, _FederationViewSet):  # type: ignore[misc]
    model = Peer
    serializer_class = PeerSerializer
    lookup_field = "name"

    def scoped_queryset(self) -> QuerySet[Any]:
        return Peer.objects.prefetch_related("keys").order_by("name")

    def _require_staff(self) -> None:
        user = self.access.user
        if not (user is not None and getattr(user, "is_staff", False)):
            raise HermesAPIError(
                "Peers and link keys are shared by every org on this instance: only staff may change them.",
                code="staff_required",
                status_code=403,
            )

    def perform_create(self, serializer: Any) -> None:
        self._require_staff()
        serializer.instance = actions.create_peer(actor=self.request.user, **serializer.validated_data)

    @extend_schema(request=AddKeySerializer, responses=LinkKeySerializer)
    @action(detail=True, methods=["post"], url_path="keys")
    def add_key(self, request: Request, name: str) -> Response:
        """Add K_n+1. The plaintext secret is in the response once; give it to the peer's operator."""
        self._require_staff()
        peer = self.get_object()
        body = AddKeySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        secret = None
        if body.validated_data.get("secret"):
            try:
                secret = decode_secret(body.validated_data["secret"])
            except ValueError as exc:
                raise HermesAPIError(str(exc), code="invalid", details={"secret": [str(exc)]}) from exc
        key = actions.add_key(peer, secret=secret, actor=request.user)
        data = dict(LinkKeySerializer(key).data)
        if secret is None:
            data["secret"] = encode_secret(key.secret())
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(request=PeerStatusSerializer, responses=PeerSerializer)
    @action(detail=True, methods=["post"], url_path="status")
    def set_status(self, request: Request, name: str) -> Response:
        """Disable a link (its outbox waits; its inbound requests get 404 unknown_peer) or enable it again."""
        self._require_staff()
        body = PeerStatusSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        peer = actions.set_peer_status(self.get_object(), body.validated_data["status"], actor=request.user)
        return Response(PeerSerializer(peer).data)

    @extend_schema(request=None, responses=LinkKeySerializer)
    @action(detail=True, methods=["post"], url_path="keys/promote")
    def promote_key(self, request: Request, name: str) -> Response:
        self._require_staff()
        return Response(LinkKeySerializer(actions.promote_key(self.get_object(), actor=request.user)).data)

    @extend_schema(request=RetireKeySerializer, responses=LinkKeySerializer)
    @action(detail=True, methods=["post"], url_path="keys/retire")
    def retire_key(self, request: Request, name: str) -> Response:
        self._require_staff()
        body = RetireKeySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = actions.retire_key(self.get_object(), version=body.validated_data.get("version"), actor=request.user)
        return Response(LinkKeySerializer(key).data)


class ContactViewSet(  # type: ignore[misc]
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    _FederationViewSet,
):
    model = Contact
    serializer_class = ContactSerializer

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = actions.create_contact(org=self.org, **serializer.validated_data)

    def perform_destroy(self, instance: Contact) -> None:
        actions.delete_contact(instance)


class PolicyViewSet(  # type: ignore[misc]
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    _FederationViewSet,
):
    """POST replaces the rule for the same (local_agent, remote) pair."""

    model = Policy
    serializer_class = PolicySerializer

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = actions.set_policy(org=self.org, **serializer.validated_data)

    def perform_destroy(self, instance: Policy) -> None:
        actions.delete_policy(instance)


class _SendMessageMixin:
    """POST sends one message (202: delivery is asynchronous; follow `delivery.status`)."""

    def create(self, request: Request) -> Response:
        body = SendMessageSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        message = actions.send_message(org=self.org, actor=request.user, **body.validated_data)  # type: ignore[attr-defined]
        message = self.get_queryset().get(pk=message.pk)  # type: ignore[attr-defined]
        return Response(MessageSerializer(message).data, status=status.HTTP_202_ACCEPTED)


class MessageViewSet(  # type: ignore[misc]
    IdempotentCreateMixin, _SendMessageMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, _FederationViewSet
):
    """Messages this org sent, with their delivery state; `?status=` filters by delivery status. POST sends one
    and honours `Idempotency-Key`."""

    model = Message
    serializer_class = MessageSerializer

    @extend_schema(request=SendMessageSerializer, responses={202: MessageSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # Declared here so the schema sees it: IdempotentCreateMixin (next in the MRO) wraps _SendMessageMixin's.
        return super().create(request, *args, **kwargs)

    def scoped_queryset(self) -> QuerySet[Any]:
        qs = super().scoped_queryset().select_related("outbox")
        if status_filter := one_of(self.request.query_params.get("status"), "status", OutboxStatus.values):
            qs = qs.filter(outbox__status=status_filter)
        return qs


class DeadLetterViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _FederationViewSet):  # type: ignore[misc]
    """The dead-letter queue: inspect (payload and every attempt), requeue or discard, one or many."""

    model = Outbox
    serializer_class = DeadLetterSerializer
    lookup_field = "message_id"

    def scoped_queryset(self) -> QuerySet[Any]:
        return (
            super()
            .scoped_queryset()
            .filter(status=OutboxStatus.DEAD)
            .select_related("message", "message__peer", "organization")
            .prefetch_related("attempt_log")
            .order_by("-updated_at", "-pk")
        )

    def _apply(self, request: Request, rows: list[Outbox], operation: str, reason: str) -> Response:
        if operation == "requeue":
            key, done = "requeued", actions.requeue(rows, actor=request.user, reason=reason)
        else:
            key, done = "discarded", actions.discard(rows, actor=request.user, reason=reason)
        return Response({key: [str(r.message_id) for r in done]})

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def requeue(self, request: Request, message_id: str) -> Response:
        return self._apply(request, [self.get_object()], "requeue", "")

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def discard(self, request: Request, message_id: str) -> Response:
        return self._apply(request, [self.get_object()], "discard", "")

    def _bulk(self, request: Request, operation: str) -> Response:
        body = BulkIdsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        ids = body.validated_data["ids"]
        rows = list(self.get_queryset().filter(message_id__in=ids))
        missing = sorted({str(i) for i in ids} - {str(r.message_id) for r in rows})
        if missing:
            # All or nothing: an id that is not a dead letter of this org is a 404, like a single lookup.
            raise HermesAPIError(
                "Some ids are not in this org's dead-letter queue.",
                code="not_found",
                status_code=404,
                details={"ids": missing},
            )
        return self._apply(request, rows, operation, body.validated_data["reason"])

    @extend_schema(request=BulkIdsSerializer, operation_id="federation_dlq_requeue_many")
    @action(detail=False, methods=["post"], url_path="requeue")
    def requeue_many(self, request: Request) -> Response:
        return self._bulk(request, "requeue")

    @extend_schema(request=BulkIdsSerializer, operation_id="federation_dlq_discard_many")
    @action(detail=False, methods=["post"], url_path="discard")
    def discard_many(self, request: Request) -> Response:
        return self._bulk(request, "discard")


class InboxViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _FederationViewSet):  # type: ignore[misc]
    model = InboxEntry
    serializer_class = InboxEntrySerializer

    def scoped_queryset(self) -> QuerySet[Any]:
        return super().scoped_queryset().select_related("peer")


class AuditViewSet(mixins.ListModelMixin, _FederationViewSet):  # type: ignore[misc]
    model = FederationAuditEvent
    serializer_class = AuditEventSerializer

    def scoped_queryset(self) -> QuerySet[Any]:
        qs = super().scoped_queryset().select_related("peer")
        if event := one_of(self.request.query_params.get("event"), "event", AuditEvent.values):
            qs = qs.filter(event=event)
        return qs


class _RequestRemoteTaskMixin:
    def create(self, request: Request) -> Response:
        body = RequestRemoteTaskSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        remote = actions.request_remote_task(
            org=self.org,  # type: ignore[attr-defined]
            actor=request.user,
            access=self.access,  # type: ignore[attr-defined]
            **body.validated_data,
        )
        remote = self.get_queryset().get(pk=remote.pk)  # type: ignore[attr-defined]
        return Response(RemoteTaskSerializer(remote).data, status=status.HTTP_202_ACCEPTED)


class RemoteTaskViewSet(  # type: ignore[misc]
    IdempotentCreateMixin, _RequestRemoteTaskMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, _FederationViewSet
):
    """Tasks this org asked other orgs' agents to run (here or on peers), each with its mirrored timeline and
    `task_id`, this org's own task for it (`/api/v1/tasks/{task_id}`, its events, stream and cancel). POST asks
    for one (tasks:write and federation:write)."""

    model = RemoteTask
    serializer_class = RemoteTaskSerializer
    required_actions = {"create": "tasks:write"}

    def scoped_queryset(self) -> QuerySet[Any]:
        return super().scoped_queryset().select_related("request__outbox").prefetch_related("events")

    @extend_schema(request=RequestRemoteTaskSerializer, responses={202: RemoteTaskSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not self.access.allows("federation:write"):
            raise HermesAPIError(
                "Asking another org's agent needs federation:write as well as tasks:write.",
                code="missing_scope" if self.access.scopes is not None else "role_forbidden",
                status_code=403,
                details={"required_action": "federation:write"},
            )
        return super().create(request, *args, **kwargs)
