"""Federation API (federation:read / federation:write).

Peers and their keys are instance-wide: every org may read them (without secrets), but changing a link also
requires a staff account, because it affects every org on the instance.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import OrgScopedViewSet, describe
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
    AddedLinkKeySerializer,
    AddKeySerializer,
    AuditEventSerializer,
    BulkIdsSerializer,
    ContactSerializer,
    DeadLetterSerializer,
    DiscardedSerializer,
    InboxEntrySerializer,
    LinkKeySerializer,
    MessageSerializer,
    PeerSerializer,
    PeerStatusSerializer,
    PolicySerializer,
    ReasonSerializer,
    RemoteTaskSerializer,
    RequestRemoteTaskSerializer,
    RequeuedSerializer,
    RetireKeySerializer,
    SendMessageSerializer,
)
from apps.federation.signing import decode_secret, encode_secret
from apps.tasks import actions as task_actions


class _FederationViewSet(OrgScopedViewSet):
    read_action = "federation:read"
    write_action = "federation:write"


_READ, _WRITE = "federation:read", "federation:write"
_STAFF = {403: "`staff_required`: links are shared by every org of the instance, so only staff change them."}
_IDEMPOTENCY = {
    400: "`invalid_idempotency_key`: a malformed `Idempotency-Key`.",
    409: "`idempotency_conflict`: the `Idempotency-Key` was used before with a different request.",
}
_SENDING = {
    400: "`invalid_address`, `unknown_recipient` (no such org here), `unknown_peer`, `peer_disabled`, "
    "`no_link_key` (the link has no live key to sign with): where it was to go. " + _IDEMPOTENCY[400],
    403: "`policy_denied`: the org's federation policy forbids sending there (the denial is audited).",
    409: _IDEMPOTENCY[409],
}


@extend_schema_view(
    list=describe(
        "List peers",
        action=_READ,
        notes="The instance's federation links (shared by every org), with their keys' versions, states and "
        "fingerprints; never a secret.",
    ),
    retrieve=describe("Read a peer", action=_READ, notes="One link and its keys, by name."),
    create=describe(
        "Add a peer",
        action=_WRITE,
        notes="Staff only. A link to another Hermes instance: its name, base URL and the name it knows this "
        "instance by; add its keys next.",
        errors={**_STAFF, 409: "`peer_exists`: a peer of that name exists."},
    ),
)
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

    @describe(
        "Add a link key",
        action=_WRITE,
        notes="Staff only. Adds the next key K_n+1 (step 1 of a rotation, docs/federation.md): with `secret`, the "
        "one the other side generated; without, Hermes generates it and answers it once.",
        request=AddKeySerializer,
        responses={201: AddedLinkKeySerializer},
        errors={
            **_STAFF,
            409: "`key_pending`: a next key is already waiting to be promoted; `key_retired`: the secret is a retired "
            "key's (which never verifies again; `details.version`, `details.retired_at`); `key_exists`: it is a "
            "live key's.",
        },
    )
    @action(detail=True, methods=["post"], url_path="keys")
    def add_key(self, request: Request, name: str) -> Response:
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

    @describe(
        "Enable or disable a peer",
        action=_WRITE,
        notes="Staff only. Disabled: nothing is sent to the link — new messages to it are refused with "
        "`peer_disabled`, replies to conversations under way (task results, cancels, follow-ups) wait in its "
        "outbox — and its inbound requests are refused; enabling it sends what waited.",
        request=PeerStatusSerializer,
        responses={200: PeerSerializer},
        errors=_STAFF,
    )
    @action(detail=True, methods=["post"], url_path="status")
    def set_status(self, request: Request, name: str) -> Response:
        self._require_staff()
        body = PeerStatusSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        peer = actions.set_peer_status(self.get_object(), body.validated_data["status"], actor=request.user)
        return Response(PeerSerializer(peer).data)

    @describe(
        "Promote the next link key",
        action=_WRITE,
        notes="Staff only. The next key becomes current and the current one previous (it still verifies).",
        request=None,
        responses={200: LinkKeySerializer},
        errors={
            **_STAFF,
            409: "`no_next_key`: there is none to promote; `key_previous`: retire the previous key first.",
        },
    )
    @action(detail=True, methods=["post"], url_path="keys/promote")
    def promote_key(self, request: Request, name: str) -> Response:
        self._require_staff()
        return Response(LinkKeySerializer(actions.promote_key(self.get_object(), actor=request.user)).data)

    @describe(
        "Retire a link key",
        action=_WRITE,
        notes="Staff only. The previous key (or `version`) never signs or verifies again.",
        request=RetireKeySerializer,
        responses={200: LinkKeySerializer},
        errors={
            **_STAFF,
            404: "`not_found`: the peer has no key of that `version`.",
            409: "`no_previous_key`, `key_current` (promote its successor first), `key_retired`.",
        },
    )
    @action(detail=True, methods=["post"], url_path="keys/retire")
    def retire_key(self, request: Request, name: str) -> Response:
        self._require_staff()
        body = RetireKeySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = actions.retire_key(self.get_object(), version=body.validated_data.get("version"), actor=request.user)
        return Response(LinkKeySerializer(key).data)


@extend_schema_view(
    list=describe("List contacts", action=_READ, notes="The org's federation address book."),
    retrieve=describe("Read a contact", action=_READ, notes="One entry of the org's address book."),
    create=describe(
        "Add a contact",
        action=_WRITE,
        notes="A name for an address (`org`, `agent.org`, either with `@peer`), stored canonical.",
        errors={
            400: "`invalid_address`: not a federation address.",
            409: "`contact_exists`: the address is in the book already.",
        },
    ),
    destroy=describe("Delete a contact", action=_WRITE, notes="Removes the entry; nothing else changes."),
)
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
        serializer.instance = actions.create_contact(org=self.org, access=self.access, **serializer.validated_data)

    def perform_destroy(self, instance: Contact) -> None:
        actions.delete_contact(instance, access=self.access)


@extend_schema_view(
    list=describe(
        "List federation policies",
        action=_READ,
        notes="The org's allow/deny rules for what it sends and accepts (docs/federation.md).",
    ),
    retrieve=describe("Read a federation policy", action=_READ, notes="One allow/deny rule."),
    create=describe(
        "Set a federation policy",
        action=_WRITE,
        notes="Replaces the rule for the same (`local_agent`, `remote`) pair; applies at once on every process. "
        "201 when the pair had no rule; 200 when it replaced the pair's rule or found it unchanged.",
        responses={201: PolicySerializer, 200: PolicySerializer},
        errors={
            400: "`invalid_address`: `remote` is not `*`, `*@peer` or a federation address; `unknown_agent`: "
            "`local_agent` is not the slug of one of the org's own agents."
        },
    ),
    destroy=describe(
        "Delete a federation policy",
        action=_WRITE,
        notes="Without the rule, a broader one (or HERMES_FEDERATION_DEFAULT_POLICY) decides.",
    ),
)
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

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        saved = actions.save_policy(org=self.org, access=self.access, **serializer.validated_data)
        created = status.HTTP_201_CREATED if saved.created else status.HTTP_200_OK
        return Response(self.get_serializer(saved.rule).data, status=created)

    def perform_destroy(self, instance: Policy) -> None:
        actions.delete_policy(instance, access=self.access)


class _SendMessageMixin:
    """POST sends one message (202: delivery is asynchronous; follow `delivery.status`)."""

    def create(self, request: Request) -> Response:
        body = SendMessageSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        message = actions.send_message(org=self.org, actor=request.user, **body.validated_data)  # type: ignore[attr-defined]
        message = self.get_queryset().get(pk=message.pk)  # type: ignore[attr-defined]
        return Response(MessageSerializer(message).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    list=describe(
        "List sent messages",
        action=_READ,
        notes="Messages this org sent, newest first, each with its delivery state.",
        parameters=[
            OpenApiParameter(
                "status", str, enum=OutboxStatus.values, description="Only messages in this delivery status."
            )
        ],
    ),
    retrieve=describe("Read a sent message", action=_READ, notes="The message and its delivery state."),
)
class MessageViewSet(  # type: ignore[misc]
    IdempotentCreateMixin, _SendMessageMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, _FederationViewSet
):
    """Messages this org sent, with their delivery state; `?status=` filters by delivery status. POST sends one
    and honours `Idempotency-Key`."""

    model = Message
    serializer_class = MessageSerializer

    @describe(
        "Send a federated message",
        action=_WRITE,
        notes="202: delivery is asynchronous; follow `delivery.status`. Honours `Idempotency-Key`.",
        request=SendMessageSerializer,
        responses={202: MessageSerializer},
        errors=_SENDING,
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # Declared here so the schema sees it: IdempotentCreateMixin (next in the MRO) wraps _SendMessageMixin's.
        return super().create(request, *args, **kwargs)

    def scoped_queryset(self) -> QuerySet[Any]:
        qs = super().scoped_queryset().select_related("outbox", "peer")
        if status_filter := one_of(self.request.query_params.get("status"), "status", OutboxStatus.values):
            qs = qs.filter(outbox__status=status_filter)
        return qs


_NOT_A_DEAD_LETTER = {
    404: "`not_found`: the id is not in the org's dead-letter queue: not a message of the org, or not "
    "dead-lettered (any more)."
}


@extend_schema_view(
    list=describe(
        "List dead letters", action=_READ, notes="The org's messages that gave up being delivered, latest first."
    ),
    retrieve=describe(
        "Read a dead letter", action=_READ, notes="The message with its payload, delivery state and every attempt."
    ),
)
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

    def get_object(self) -> Outbox:
        try:
            return super().get_object()
        except Http404:
            # The bulk actions' words, for one id: a bare "Not found." left the caller guessing whether the id was
            # wrong or the row had been requeued, discarded or delivered meanwhile. Another org's id reads exactly
            # the same (the body does not even echo the id, which the URL names).
            raise HermesAPIError(
                "This id is not in this org's dead-letter queue.", code="not_found", status_code=404
            ) from None

    def _apply(self, request: Request, rows: list[Outbox], operation: str, reason: str) -> Response:
        if operation == "requeue":
            key, done = "requeued", actions.requeue(rows, actor=request.user, reason=reason)
        else:
            key, done = "discarded", actions.discard(rows, actor=request.user, reason=reason)
        return Response({key: [str(r.message_id) for r in done]})

    @describe(
        "Requeue a dead letter",
        action=_WRITE,
        notes="Back to the outbox for delivery, with a fresh attempt budget; audited with the optional `reason`.",
        request=ReasonSerializer,
        responses={200: RequeuedSerializer},
        errors=_NOT_A_DEAD_LETTER,
    )
    @action(detail=True, methods=["post"])
    def requeue(self, request: Request, message_id: str) -> Response:
        row = self.get_object()
        body = ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._apply(request, [row], "requeue", body.validated_data["reason"])

    @describe(
        "Discard a dead letter",
        action=_WRITE,
        notes="Gives the message up for good; audited with the optional `reason`.",
        request=ReasonSerializer,
        responses={200: DiscardedSerializer},
        errors=_NOT_A_DEAD_LETTER,
    )
    @action(detail=True, methods=["post"])
    def discard(self, request: Request, message_id: str) -> Response:
        row = self.get_object()
        body = ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._apply(request, [row], "discard", body.validated_data["reason"])

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

    @describe(
        "Requeue dead letters",
        action=_WRITE,
        notes="All or nothing: every id must be a dead letter of the org. Audited with `reason`.",
        request=BulkIdsSerializer,
        responses={200: RequeuedSerializer},
        operation_id="federation_dlq_requeue_many",
        errors={404: "`not_found`: some ids are not in the org's dead-letter queue (`details.ids`); none is requeued."},
    )
    @action(detail=False, methods=["post"], url_path="requeue")
    def requeue_many(self, request: Request) -> Response:
        return self._bulk(request, "requeue")

    @describe(
        "Discard dead letters",
        action=_WRITE,
        notes="All or nothing: every id must be a dead letter of the org. Audited with `reason`.",
        request=BulkIdsSerializer,
        responses={200: DiscardedSerializer},
        operation_id="federation_dlq_discard_many",
        errors={
            404: "`not_found`: some ids are not in the org's dead-letter queue (`details.ids`); none is discarded."
        },
    )
    @action(detail=False, methods=["post"], url_path="discard")
    def discard_many(self, request: Request) -> Response:
        return self._bulk(request, "discard")


@extend_schema_view(
    list=describe(
        "List received messages",
        action=_READ,
        notes="Messages other orgs sent this org, newest first; `peer` is null for orgs of this instance.",
    ),
    retrieve=describe("Read a received message", action=_READ, notes="One received message and how it was handled."),
)
class InboxViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _FederationViewSet):  # type: ignore[misc]
    model = InboxEntry
    serializer_class = InboxEntrySerializer

    def scoped_queryset(self) -> QuerySet[Any]:
        return super().scoped_queryset().select_related("peer")


@extend_schema_view(
    list=describe(
        "Read the federation audit log",
        action=_READ,
        notes="The org's federation events, newest first: deliveries, refusals, DLQ actions, key rotations.",
        parameters=[OpenApiParameter("event", str, enum=AuditEvent.values, description="Only events of this kind.")],
    ),
)
class AuditViewSet(mixins.ListModelMixin, _FederationViewSet):  # type: ignore[misc]
    model = FederationAuditEvent
    serializer_class = AuditEventSerializer

    def scoped_queryset(self) -> QuerySet[Any]:
        qs = super().scoped_queryset().select_related("peer", "actor")
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


@extend_schema_view(
    list=describe(
        "List remote tasks",
        action=_READ,
        notes="Tasks this org asked other orgs' agents to run, newest first, each with its mirrored timeline.",
    ),
    retrieve=describe(
        "Read a remote task",
        action=_READ,
        notes="The request, its delivery and the timeline the executor reported; `task_id` is this org's task.",
    ),
)
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
        return super().scoped_queryset().select_related("request__outbox", "request__peer").prefetch_related("events")

    @describe(
        "Ask another org's agent to run a task",
        action="tasks:write",
        notes="Needs `federation:write` as well. 202: the task request is delivered asynchronously; the task is "
        "an ordinary task of this org (`task_id`), so it lists, streams and cancels like any other. Honours "
        "`Idempotency-Key`.",
        request=RequestRemoteTaskSerializer,
        responses={202: RemoteTaskSerializer},
        errors={
            **_SENDING,
            400: _SENDING[400] + " `invalid_message`: the message is no A2A message an agent could be sent.",
            403: "`missing_scope` / `role_forbidden` for `federation:write`; " + _SENDING[403],
            413: "`input_too_large`: the message exceeds HERMES_MAX_TASK_INPUT_BYTES.",
            429: "Also past the organization's tasks per day (`details.limit`: `tasks_per_day`).",
        },
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # Before the Idempotency-Key is looked at (and once more where the task is created).
        task_actions.require_federation_write(self.access)
        return super().create(request, *args, **kwargs)
