"""The federation inbox: peers POST signed messages here. Authenticated by the link's HMAC signature, not by
an API key or session, so it is a plain Django view (no DRF authentication, no CSRF: nothing ambient authorises
the request)."""

from __future__ import annotations

import json
import uuid

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apps.core.errors import error_body
from apps.core.metrics import FEDERATION_INBOUND
from apps.federation import signing
from apps.federation.actions import audit
from apps.federation.inbound import InboundResult, decode_body, receive
from apps.federation.models import AuditEvent, Peer, PeerStatus
from apps.federation.selectors import live_secrets

MAX_BODY_BYTES = 1024 * 1024


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


@csrf_exempt
@require_POST
def inbox(request: HttpRequest, sender: str) -> HttpResponse:
    peer = Peer.objects.filter(name=sender).first()
    if peer is None or peer.status != PeerStatus.ACTIVE:
        audit(AuditEvent.REJECTED, peer=peer, reason=f"no active link named '{sender}'")
        FEDERATION_INBOUND.labels(decision="rejected").inc()
        return _json(404, error_body("unknown_peer", f"This instance has no active link named '{sender}'."))
    body = request.body
    if len(body) > MAX_BODY_BYTES:
        FEDERATION_INBOUND.labels(decision="rejected").inc()
        return _json(413, error_body("too_large", f"Federation messages are limited to {MAX_BODY_BYTES} bytes."))
    secrets = live_secrets(peer)
    msg_id = request.headers.get("webhook-id", "")
    if settings.HERMES_FEDERATION_HMAC or request.headers.get("webhook-signature"):
        try:
            msg_id, _ = signing.verify(request.headers, body, secrets, tolerance=settings.HERMES_FEDERATION_TOLERANCE)
        except signing.SignatureError as exc:
            audit(exc.code, peer=peer, message_id=_uuid_or_none(msg_id), reason=exc.reason)
            FEDERATION_INBOUND.labels(decision=exc.code).inc()
            return _json(401, error_body(exc.code, exc.reason))
    try:
        data = decode_body(body)
    except (UnicodeDecodeError, ValueError):
        result = InboundResult(400, error_body("invalid_json", "The body is not JSON."), "rejected")
        audit(AuditEvent.REJECTED, peer=peer, message_id=_uuid_or_none(msg_id), reason="body is not JSON")
        return _json(result.status, result.body)
    result = receive(peer=peer, message_id=msg_id, data=data)
    if result.status == 200:
        return _json(200, result.body, msg_id=msg_id, secrets=secrets)
    return _json(result.status, result.body)
