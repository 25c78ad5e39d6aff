"""The federation inbox: peers POST signed messages here. Authenticated by the link's HMAC signature, not by
an API key or session, so it is a plain Django view (no DRF authentication, no CSRF: nothing ambient authorises
the request).

Below it, the console pages of federation (peers and keys, contacts, policies, outbox, inbox, DLQ, audit)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from apps.core import jsonutil
from apps.core.console import filtered_page, hx_redirect, is_fragment_request, render_console
from apps.core.crypto import DecryptionError
from apps.core.errors import HermesAPIError, error_body
from apps.core.metrics import FEDERATION_INBOUND
from apps.core.permissions import Access, role_refusal
from apps.federation import actions, selectors, signing
from apps.federation.actions import audit
from apps.federation.forms import ContactForm, PeerForm, PolicyForm, RemoteTaskForm, SendForm
from apps.federation.inbound import MAX_MESSAGE_BYTES, decode_body, duplicate_of, receive
from apps.federation.models import (
    AuditEvent,
    Contact,
    FederationAuditEvent,
    InboxEntry,
    Outbox,
    OutboxStatus,
    Peer,
    PeerStatus,
    Policy,
    RemoteTask,
)
from apps.federation.selectors import live_secrets
from apps.federation.signing import decode_secret, encode_secret
from apps.orgs import quotas
from apps.orgs.decorators import org_action_required

logger = logging.getLogger(__name__)


def _json(
    status: int, body: dict[str, object], *, msg_id: str | None = None, secrets: list[bytes] | None = None
) -> HttpResponse:
    raw = json.dumps(body, separators=(",", ":")).encode()
    response = HttpResponse(raw, status=status, content_type="application/json")
    if msg_id and secrets:
        # The receipt is signed like a request (webhook-id = the message id), so the sender can prove delivery.
        for name, value in signing.sign_headers(msg_id, raw, secrets).items():
            response[name] = value
    return response


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value or "")
    except ValueError:
        return None


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0  # as Django reads it


def _over_rate_limit(peer: Peer, msg_id: str) -> HttpResponse | None:
    limit = settings.HERMES_FEDERATION_INBOUND_PER_MINUTE
    if not limit:
        return None
    decision = quotas.check_per_minute(f"federation-peer:{peer.pk}", limit, "peer_messages_per_minute")
    if decision is None or decision.allowed:
        return None  # under the limit, or Redis unreachable (fail open: delivery matters more than the limit)
    reason = f"more than {limit} messages per minute from {peer.name}"
    audit(AuditEvent.RATE_LIMITED, peer=peer, message_id=_uuid_or_none(msg_id), reason=reason)
    FEDERATION_INBOUND.labels(decision="rate_limited").inc()
    response = _json(429, error_body("rate_limited", f"Too many messages: {reason}; retry later."))
    # The sender's delivery honors Retry-After on 429: the message is retried, not lost.
    response["Retry-After"] = str(decision.retry_after)
    return response


# One audit row per peer and reason a minute, at most, for requests refused before a signature proved who sent
# them: anyone can send those (see _refused_unauthenticated).
UNAUTHENTICATED_AUDIT_LIMIT_PER_MINUTE = 1


def _refused_unauthenticated(code: str, *, sender: str, peer: Peer | None, msg_id: str, reason: str) -> None:
    """Count and log every refusal that comes before authentication (unknown or disabled link, bad signature,
    stale timestamp), but persist only a bounded sample: anybody who can reach the endpoint can send these, and
    one audit row per request let an anonymous client fill the audit table. A link name we do not have is never
    persisted (there is no peer to file it under, and the name is the sender's to choose); a known link's
    refusals write their first audit row of each minute per reason, so a broken rotation is still visible in the
    audit log. With Redis unreachable nothing is persisted (the bound holds); the log line is always written."""
    FEDERATION_INBOUND.labels(decision=str(code)).inc()
    logger.info("federation: refused inbound request for link %r: %s: %s", sender[:80], code, reason)
    if peer is None:
        return
    sample = quotas.check_per_minute(
        f"federation-unauthenticated:{peer.pk}:{code}",
        UNAUTHENTICATED_AUDIT_LIMIT_PER_MINUTE,
        "federation_unauthenticated_audit",
    )
    if sample is not None and sample.allowed:
        detail = {"sampled": "the first of this minute for this link and reason; the rest are only logged"}
        audit(code, peer=peer, message_id=_uuid_or_none(msg_id), reason=reason, detail=detail)


@csrf_exempt
def inbox(request: HttpRequest, sender: str) -> HttpResponse:
    if request.method != "POST":
        method = (request.method or "")[:10]
        response = _json(
            405, error_body("method_not_allowed", f"Peers POST signed messages here; {method} is not supported.")
        )
        response["Allow"] = "POST"
        return response
    msg_id = request.headers.get("webhook-id", "")
    peer = Peer.objects.filter(name=sender).first()
    if peer is None:
        reason = f"no link named '{sender[:80]}'"
        _refused_unauthenticated(AuditEvent.REJECTED, sender=sender, peer=peer, msg_id=msg_id, reason=reason)
        return _json(404, error_body("unknown_peer", f"This instance has no link named '{sender}'."))
    if peer.status != PeerStatus.ACTIVE:
        # Switched off here, perhaps for a minute: a retryable answer, so the peer keeps the message and tries
        # again (a 404 dead-lettered it at once, and a task result lost that way left the requester's task
        # waiting for the gap forever). The peer's retry budget decides how long a disabled link is waited for.
        reason = f"the link '{peer.name}' is disabled on this instance"
        _refused_unauthenticated(AuditEvent.REJECTED, sender=sender, peer=peer, msg_id=msg_id, reason=reason)
        response = _json(503, error_body("link_disabled", f"The link '{peer.name}' is disabled on this instance."))
        response["Retry-After"] = "30"  # a floor for the sender's backoff (docs/federation.md, Delivery)
        return response
    if request.content_type != "application/json":
        FEDERATION_INBOUND.labels(decision="rejected").inc()
        given = request.content_type or "none"
        return _json(415, error_body("unsupported_media_type", f"Send application/json, not {given[:80]}."))
    # Said before the body is read: Django refuses one over DATA_UPLOAD_MAX_MEMORY_SIZE (5 MB) itself, with
    # another code (or, with DEBUG, its HTML error page).
    if _declared_length(request) > MAX_MESSAGE_BYTES or len(body := request.body) > MAX_MESSAGE_BYTES:
        FEDERATION_INBOUND.labels(decision="rejected").inc()
        return _json(413, error_body("too_large", f"Federation messages are limited to {MAX_MESSAGE_BYTES} bytes."))
    try:
        secrets = live_secrets(peer)
    except DecryptionError as exc:
        # Ours to fix, not the peer's: a retryable answer, so its messages wait (see delivery.UNREADABLE_KEYS_FIX).
        logger.error("federation: cannot verify a message from %s: the link keys cannot be read (%s)", peer.name, exc)
        response = _json(
            503, error_body("link_keys_unreadable", "This instance cannot read its link keys; retry later.")
        )
        response["Retry-After"] = "60"
        return response
    if settings.HERMES_FEDERATION_HMAC or request.headers.get("webhook-signature"):
        try:
            msg_id, _ = signing.verify(request.headers, body, secrets, tolerance=settings.HERMES_FEDERATION_TOLERANCE)
        except signing.SignatureError as exc:
            _refused_unauthenticated(exc.code, sender=sender, peer=peer, msg_id=msg_id, reason=exc.reason)
            return _json(401, error_body(exc.code, exc.reason))
    # A message received before (the sender's retry, or a replay of a captured request within the timestamp
    # tolerance) gets its original receipt without spending the link's budget: a replayer has no key either, and
    # used to get the peer's own messages refused with 429.
    if (duplicate := duplicate_of(peer, msg_id)) is not None:
        return _json(200, duplicate.body, msg_id=msg_id, secrets=secrets)
    # Counted after the signature check, so nobody but the peer itself can spend its budget.
    if (limited := _over_rate_limit(peer, msg_id)) is not None:
        return limited
    try:
        data = decode_body(body)
    except jsonutil.Refused as exc:
        # JSON, but holding what cannot be stored (a NUL, a lone surrogate, NaN, nesting too deep): said as the
        # API says it, naming where, not passed off as "not JSON".
        why = jsonutil.describe_error(exc)
        audit(AuditEvent.REJECTED, peer=peer, message_id=_uuid_or_none(msg_id), reason=why)
        return _json(400, error_body("invalid_json", why))
    except (UnicodeDecodeError, ValueError):
        audit(AuditEvent.REJECTED, peer=peer, message_id=_uuid_or_none(msg_id), reason="body is not JSON")
        return _json(400, error_body("invalid_json", "The body is not JSON."))
    result = receive(peer=peer, message_id=msg_id, data=data)
    if result.status == 200:
        return _json(200, result.body, msg_id=msg_id, secrets=secrets)
    return _json(result.status, result.body)


# --- Console (HTML) ---------------------------------------------------------------------------------------------
# Everything below is the org admins' console for federation (templates/federation/). Reads are
# `federation:read`, changes `federation:write`; peers and link keys are instance-wide, so changing them also
# needs a staff account, exactly like the API.


def _access(request: HttpRequest) -> Access:
    return request.access  # type: ignore[attr-defined]


def _require_staff(request: HttpRequest) -> None:
    if not getattr(request.user, "is_staff", False):
        raise PermissionDenied(
            "Peers and link keys are shared by every org on this instance: only staff may change them."
        )


def _peer_or_404(name: str) -> Peer:
    return get_object_or_404(Peer.objects.prefetch_related("keys"), name=name)


def _peers_context(
    request: HttpRequest,
    *,
    secret: dict[str, str] | None = None,
    form: Any = None,
    key_error: dict[str, str] | None = None,
) -> dict[str, Any]:
    peers = list(Peer.objects.prefetch_related("keys").order_by("name"))
    for peer in peers:
        peer.sorted_keys = sorted(peer.keys.all(), key=lambda k: -k.version)  # type: ignore[attr-defined]
    return {
        "peers": peers,
        "is_staff": bool(getattr(request.user, "is_staff", False)),
        "secret": secret,
        "peer_form": form or PeerForm(),
        "key_error": key_error,
    }


@org_action_required("federation:read")
def console_peers(request: HttpRequest) -> HttpResponse:
    return render_console(request, "federation/peers.html", _peers_context(request), partial="peers_panel")


@org_action_required("federation:write")
@require_POST
def console_peer_create(request: HttpRequest) -> HttpResponse:
    _require_staff(request)
    form = PeerForm(request.POST)
    status = 200
    if form.is_valid():
        try:
            peer = actions.create_peer(actor=request.user, **form.cleaned_data)
        except HermesAPIError as exc:
            if exc.status_code != 409:
                raise
            form.add_error("name", str(exc.detail))
        else:
            messages.success(request, f"Peer {peer.name} added. Add its first link key next.")
            if blocked := actions.delivery_blocked_reason(peer):
                # Saved all the same (the allowlist may be about to change), but every delivery would be
                # dead-lettered until it does: say so now.
                messages.warning(request, f"Deliveries to this peer will be refused: {blocked}")
            form = PeerForm()
    if form.errors:
        status = 422
    context = _peers_context(request, form=form)
    return render_console(request, "federation/peers.html", context, partial="peers_panel", status=status)


@org_action_required("federation:write")
@require_POST
def console_peer_status(request: HttpRequest, name: str) -> HttpResponse:
    """Disable a link (nothing is sent to it or accepted from it; its outbox waits) or enable it again."""
    _require_staff(request)
    peer = _peer_or_404(name)
    status = request.POST.get("status", "")
    if status not in PeerStatus.values:
        raise Http404("Unknown peer status")
    actions.set_peer_status(peer, status, actor=request.user)
    messages.success(request, f"Peer {peer.name} is now {peer.status}.")
    return render_console(request, "federation/peers.html", _peers_context(request), partial="peers_panel")


@org_action_required("federation:write")
@require_POST
def console_key_action(request: HttpRequest, name: str, operation: str) -> HttpResponse:
    """Rotation in three steps: add K_n+1, promote it, retire the previous key. Adding on the side that starts a
    link or rotation generates the secret (shown once, for the peer's operator); the other side pastes it, as
    `federation_keys add --secret` and the API's `{"secret"}` take it — without that, two operators following the
    console ended with different keys and every message was refused as bad_signature."""
    _require_staff(request)
    peer = _peer_or_404(name)
    secret = None
    if operation == "add":
        given = request.POST.get("secret", "").strip()
        try:
            key = actions.add_key(peer, secret=decode_secret(given) if given else None, actor=request.user)
        except ValueError as exc:
            # Said next to the field (the secret typed is not sent back into the page).
            why = f"Not added: {exc}. Paste the whsec_… secret exactly as the operator of {peer.name} gave it."
            error = {"peer": peer.name, "message": why}
            context = _peers_context(request, key_error=error)
            response = render_console(request, "federation/peers.html", context, partial="peers_panel", status=422)
            add_never_cache_headers(response)
            return response
        if given:
            messages.success(
                request,
                f"k{key.version} added to {peer.name} as {key.state} with the secret its operator gave; fingerprint "
                f"{key.fingerprint} (theirs must be the same).",
            )
        else:
            secret = {"peer": peer.name, "version": str(key.version), "value": encode_secret(key.secret())}
            messages.success(request, f"k{key.version} added to {peer.name} as {key.state}.")
    elif operation == "promote":
        key = actions.promote_key(peer, actor=request.user)
        messages.success(request, f"k{key.version} is now the current key of {peer.name}.")
    elif operation == "retire":
        key = actions.retire_key(peer, actor=request.user)
        messages.success(request, f"k{key.version} of {peer.name} retired: it no longer verifies.")
    else:
        raise Http404("Unknown key operation")
    response = render_console(
        request, "federation/peers.html", _peers_context(request, secret=secret), partial="peers_panel"
    )
    add_never_cache_headers(response)
    return response


def _submit_form(
    request: HttpRequest,
    access: Access,
    form: Any,
    act: Callable[[dict[str, Any]], Any],
    *,
    error_field: str,
    error_statuses: tuple[int, ...],
    success: Callable[[Any], str],
) -> tuple[Any, int]:
    """The POST half of a federation console form: write guard, the action, its refusal shown on the form, a
    flash on success (with a fresh form). Returns the form to render and the status (422 when it has errors)."""
    if request.method != "POST":
        return form, 200
    if not access.allows("federation:write"):
        raise PermissionDenied(role_refusal(access.role, "federation:write"))
    if form.is_valid():
        try:
            result = act(form.cleaned_data)
        except HermesAPIError as exc:
            # Next to the field the refusal names, else the form's main field (or the form as a whole).
            named = next((name for name in exc.details if name in form.fields), None)
            form.add_error(named or (error_field if exc.status_code in error_statuses else None), str(exc.detail))
        else:
            messages.success(request, success(result))
            form = type(form)()
    return form, 422 if form.errors else 200


def _contacts_page(request: HttpRequest, access: Access, form: Any, status: int = 200) -> HttpResponse:
    context = {
        "contacts": Contact.objects.for_org(access.org).order_by("name"),
        "form": form,
        "can_write": access.allows("federation:write"),
    }
    return render_console(request, "federation/contacts.html", context, partial="contacts_panel", status=status)


@org_action_required("federation:read")
@require_http_methods(["GET", "POST"])
def console_contacts(request: HttpRequest) -> HttpResponse:
    access = _access(request)
    form, status = _submit_form(
        request,
        access,
        ContactForm(request.POST or None),
        lambda data: actions.create_contact(org=access.org, access=access, **data),
        error_field="address",
        error_statuses=(400, 409),
        success=lambda contact: f"{contact.name} ({contact.address}) added to the address book.",
    )
    return _contacts_page(request, access, form, status)


@org_action_required("federation:write")
@require_POST
def console_contact_delete(request: HttpRequest, contact_id: int) -> HttpResponse:
    access = _access(request)
    contact = get_object_or_404(Contact.objects.for_org(access.org), pk=contact_id)
    actions.delete_contact(contact, access=access)
    messages.success(request, f"{contact.name} ({contact.address}) removed from the address book.")
    return _contacts_page(request, access, ContactForm())


@org_action_required("federation:read")
@require_http_methods(["GET", "POST"])
def console_policies(request: HttpRequest) -> HttpResponse:
    access = _access(request)
    form, status = _submit_form(
        request,
        access,
        PolicyForm(request.POST or None),
        lambda data: actions.save_policy(org=access.org, access=access, **data),
        error_field="remote",
        error_statuses=(400,),
        # (A local agent that is not one of the org's agents is refused by save_policy, on its field.)
        success=_rule_saved,
    )
    context = _policies_context(access, form)
    return render_console(request, "federation/policies.html", context, partial="policies_panel", status=status)


def _rule_saved(saved: actions.SavedPolicy) -> str:
    said = f"Rule saved: {saved.rule}."
    # Said, as a replaced invitation is: the list then shows only the new rule, and the earlier one for the same
    # pair (an "allow" turned into a "deny" by a differently spelled pattern) went without a word.
    if saved.replaced is not None:
        said += f" It replaces the earlier {saved.replaced} rule."
    if warning := actions.unknown_peer_warning(saved.rule.remote):
        said += f" {warning}"
    return said


def _policies_context(access: Access, form: Any) -> dict[str, Any]:
    return {
        "rules": Policy.objects.for_org(access.org).order_by("local_agent", "remote"),
        "form": form,
        "can_write": access.allows("federation:write"),
    }


@org_action_required("federation:write")
@require_POST
def console_policy_delete(request: HttpRequest, policy_id: int) -> HttpResponse:
    access = _access(request)
    rule = get_object_or_404(Policy.objects.for_org(access.org), pk=policy_id)
    actions.delete_policy(rule, access=access)
    messages.success(request, f"Rule removed: {rule}.")
    return render_console(
        request, "federation/policies.html", _policies_context(access, PolicyForm()), partial="policies_panel"
    )


OUTBOX_LIMIT = 100


@org_action_required("federation:read")
@require_http_methods(["GET", "POST"])
def console_outbox(request: HttpRequest) -> HttpResponse:
    access = _access(request)
    form = SendForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if not access.allows("federation:write"):
            raise PermissionDenied(role_refusal(access.role, "federation:write"))
        if form.is_valid():
            try:
                message = actions.send_message(
                    org=access.org,
                    recipient=form.cleaned_data["recipient"],
                    payload=form.cleaned_data["payload"],
                    actor=request.user,
                )
            except HermesAPIError as exc:
                if exc.status_code == 403:
                    form.add_error("recipient", str(exc.detail))
                else:
                    add_error_details(form, exc)
            else:
                messages.success(request, f"Message {str(message.pk)[:8]} queued for {message.recipient}.")
                return hx_redirect(request, reverse("federation:outbox"))
        status = 422
    status_filter = request.GET.get("status", "")
    rows = Outbox.objects.for_org(access.org).select_related("message", "message__peer").order_by("-queued_at")
    if status_filter in OutboxStatus.values:
        rows = rows.filter(status=status_filter)
    context = {
        "rows": list(rows[:OUTBOX_LIMIT]),
        "limit": OUTBOX_LIMIT,
        "statuses": OutboxStatus.choices,
        "status_filter": status_filter,
        "form": form,
        "can_write": access.allows("federation:write"),
    }
    partial = "send_form" if request.method == "POST" else "outbox_table"
    return render_console(request, "federation/outbox.html", context, partial=partial, status=status)


def add_error_details(form: Any, exc: HermesAPIError) -> None:
    """An action's per-field details on the matching fields; the message on top otherwise."""
    placed = False
    for field, errors in (exc.details or {}).items():
        if field in form.fields:
            form.add_error(field, errors if isinstance(errors, list) else [str(errors)])
            placed = True
    if not placed:
        form.add_error(None, str(exc.detail))


@org_action_required("federation:read")
def console_message(request: HttpRequest, message_id: str) -> HttpResponse:
    """One sent message: payload, delivery state and every attempt (also the DLQ's inspect view)."""
    access = _access(request)
    outbox = _outbox_or_404(access, message_id)
    context = {
        "row": outbox,
        # As it travels (JSON), not as Python prints a dict.
        "payload_json": json.dumps(outbox.message.payload, indent=2, ensure_ascii=False),
        "attempts": outbox.attempt_log.order_by("number"),
        "can_write": access.allows("federation:write"),
    }
    return render_console(request, "federation/message.html", context)


def _outbox_or_404(access: Access, message_id: str, **filters: Any) -> Outbox:
    try:
        uuid.UUID(str(message_id))
    except ValueError as exc:
        raise Http404("No such message") from exc
    rows = Outbox.objects.for_org(access.org).select_related("message", "message__peer", "organization")
    return get_object_or_404(rows, message_id=message_id, **filters)


@org_action_required("federation:read")
def console_inbox(request: HttpRequest) -> HttpResponse:
    access = _access(request)
    entries = InboxEntry.objects.for_org(access.org).select_related("peer").order_by("-created_at")[:OUTBOX_LIMIT]
    return render_console(request, "federation/inbox.html", {"entries": entries, "limit": OUTBOX_LIMIT})


def _dlq_context(access: Access) -> dict[str, Any]:
    return {
        "rows": list(selectors.dead_letters(access.org).prefetch_related("attempt_log").order_by("-dead_at")[:200]),
        "can_write": access.allows("federation:write"),
    }


@org_action_required("federation:read")
def console_dlq(request: HttpRequest) -> HttpResponse:
    return render_console(request, "federation/dlq.html", _dlq_context(_access(request)), partial="dlq_panel")


@org_action_required("federation:write")
@require_POST
def console_dlq_apply(request: HttpRequest) -> HttpResponse:
    """Requeue or discard the selected dead letters (the buttons confirm first). Ids not in this org's DLQ are a
    404, all or nothing, like the API."""
    access = _access(request)
    operation = request.POST.get("operation")
    ids = request.POST.getlist("ids")
    if operation not in {"requeue", "discard"}:
        raise Http404("Unknown operation")
    if not ids:
        messages.error(request, "Select at least one message first.")
    else:
        try:
            wanted = {str(uuid.UUID(i)) for i in ids}
        except ValueError as exc:
            raise Http404("No such message") from exc
        rows = list(selectors.dead_letters(access.org).filter(message_id__in=wanted))
        if len(rows) != len(wanted):
            # All or nothing, like the API; the usual cause is a row handled meanwhile (another tab, the API), so
            # the answer is the current list rather than a bare 404.
            gone = len(wanted) - len(rows)
            messages.error(
                request,
                f"{gone} of the {len(wanted)} selected message{'s' if len(wanted) != 1 else ''} "
                f"{'is' if gone == 1 else 'are'} no longer in the dead-letter queue (requeued or discarded meanwhile, "
                "perhaps from another tab or the API): nothing was changed. The list is current now; select again.",
            )
        else:
            # The past tense is spelled out: "{operation}d" made the audit log say "discardd".
            apply, past, told = (
                (actions.requeue, "requeued", "requeued for delivery")
                if operation == "requeue"
                else (actions.discard, "discarded", "discarded")
            )
            done = apply(rows, actor=request.user, reason=f"{past} from the console by {request.user}")
            messages.success(request, f"{len(done)} message{'s' if len(done) != 1 else ''} {told}.")
    if not is_fragment_request(request):
        return redirect("federation:dlq")
    return render_console(request, "federation/dlq.html", _dlq_context(access), partial="dlq_panel")


@org_action_required("federation:read")
def console_audit(request: HttpRequest) -> HttpResponse:
    access = _access(request)
    events = FederationAuditEvent.objects.for_org(access.org).select_related("peer", "actor").order_by("-created_at")
    listing = filtered_page(request, events, param="event", choices=AuditEvent.values)
    context = {"listing": listing, "events": AuditEvent.choices}
    return render_console(request, "federation/audit.html", context, partial="audit_table")


REMOTE_TERMINAL = frozenset({"completed", "failed", "canceled", "rejected"})


@org_action_required("federation:read")
@require_http_methods(["GET", "POST"])
def console_remote_tasks(request: HttpRequest) -> HttpResponse:
    """Tasks this org asked other orgs' agents to run (here or on a peer), and a form to ask for one."""
    access = _access(request)
    form = RemoteTaskForm(request.POST or None)
    if request.method == "POST":
        if not access.allows("federation:write"):
            raise PermissionDenied(role_refusal(access.role, "federation:write"))
        if form.is_valid():
            try:
                remote = actions.request_remote_task(
                    org=access.org, agent=form.cleaned_data["agent"], message=form.message(), access=access
                )
            except HermesAPIError as exc:
                exc.run_after_rollback()
                if exc.status_code == 403:
                    form.add_error("agent", str(exc.detail))
                else:
                    add_error_details(form, exc)
            else:
                messages.success(request, f"Task requested from {remote.agent_address}.")
                # The remote task is one of the org's tasks: follow it live in the ordinary task view.
                return hx_redirect(request, reverse("tasks:detail", args=[remote.task_id]))
    rows = (
        RemoteTask.objects.for_org(access.org)
        .select_related("request__outbox", "request__peer")
        .order_by("-created_at")[:OUTBOX_LIMIT]
    )
    context = {"rows": rows, "form": form, "can_write": access.allows("federation:write")}
    return render_console(request, "federation/remote_tasks.html", context, status=422 if form.errors else 200)


@org_action_required("federation:read")
def console_remote_task(request: HttpRequest, remote_id: str) -> HttpResponse:
    """The remote task's timeline as its result messages reported it (polled while it runs)."""
    access = _access(request)
    try:
        uuid.UUID(str(remote_id))
    except ValueError as exc:
        raise Http404("No such remote task") from exc
    remote = get_object_or_404(
        RemoteTask.objects.for_org(access.org).select_related("request__outbox", "request__peer"), pk=remote_id
    )
    context = {
        "remote": remote,
        "events": remote.events.order_by("seq"),
        "finished": remote.state in REMOTE_TERMINAL or remote.state == "rejected",
    }
    return render_console(request, "federation/remote_task.html", context, partial="remote_timeline")
