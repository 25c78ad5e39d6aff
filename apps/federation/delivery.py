"""One delivery attempt: claim the row, send it (HTTP to a peer, or in-process for an org on this instance),
classify the outcome, and hand it to `actions.finish_attempt`."""

from __future__ import annotations

import email.utils
import json
import logging
import time
from typing import Any

import httpx
from django.conf import settings
from django.utils import timezone

from apps.core.crypto import DecryptionError
from apps.federation import signing, transport
from apps.federation.actions import AttemptResult, claim_delivery, finish_attempt, no_live_key_reason
from apps.federation.addresses import Address
from apps.federation.models import AttemptOutcome, Message, Outbox, Peer
from apps.federation.selectors import live_secrets

logger = logging.getLogger(__name__)

# 408 Request Timeout, 425 Too Early and 429 Too Many Requests are the 4xx worth retrying; other 4xx mean the
# request itself is wrong (bad signature, policy, unknown recipient) and retrying cannot help.
RETRYABLE_4XX = frozenset({408, 425, 429})


def envelope(message: Message) -> bytes:
    recipient = Address.parse(message.recipient)
    body = {
        "id": str(message.id),
        "type": message.type,
        "sender": {"org": message.organization.slug, "agent": message.sender_agent or None},
        "recipient": recipient.wire(),
        "payload": message.payload,
        "correlation_id": str(message.correlation_id) if message.correlation_id else None,
        "created_at": message.created_at.isoformat(),
    }
    peer = message.peer if message.peer_id else None  # (no query for a message to an org on this instance)
    if peer is not None:
        # Binds the direction into what is signed: the link key is symmetric, so without it a message we sent could
        # be posted back to us as if the peer had sent it (see inbound.link_mismatch).
        body["link"] = link_binding(peer)
    # UTF-8 as it is (RFC 8259), not \u-escaped: escaping took an emoji 12 bytes instead of 4, and so a result
    # within the limits where it was recorded over the peer's MAX_MESSAGE_BYTES.
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def link_binding(peer: Peer) -> dict[str, str]:
    """The two ends of the link as the receiver names them: `from` is its name for us (our `local_name`, the
    receive path), `to` is our name for it (which it stores as its `local_name` for us)."""
    return {"from": peer.local_name, "to": peer.name}


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - timezone.now()).total_seconds())


def classify(status: int) -> str:
    if 200 <= status < 300:
        return AttemptOutcome.DELIVERED
    if status >= 500 or status in RETRYABLE_4XX:
        return AttemptOutcome.RETRY
    return AttemptOutcome.PERMANENT


# Error bodies bigger than this are not parsed for the peer's reason (a hostile peer may send megabytes).
_ERROR_BODY_PARSE_LIMIT = 64 * 1024


def peer_error(body: Any) -> str:
    """`code: message` from a Hermes error body (`{"error": {"code", "message"}}`, as a dict or raw bytes), or "".
    Put in the attempt's error, so last_error and the dead-letter reason say *why* a peer refused ("policy_denied:
    demo does not accept messages from acme.") instead of only "HTTP 403"."""
    if isinstance(body, bytes | str):
        if len(body) > _ERROR_BODY_PARSE_LIMIT:
            return ""
        try:
            body = json.loads(body)
        except ValueError:
            return ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ""
    code, message = error.get("code"), error.get("message")
    parts = [str(part) for part in (code, message) if isinstance(part, str) and part]
    return ": ".join(parts)[:300]


def _over_http(outbox: Outbox) -> AttemptResult:
    message = outbox.message
    peer = message.peer
    assert peer is not None
    body = envelope(message)
    secrets = live_secrets(peer)
    if not secrets and settings.HERMES_FEDERATION_HMAC:
        # Not sent unsigned (the peer would refuse it as bad_signature, blaming itself): retried with backoff, so a
        # message queued before the link's first key goes out once it is added (actions.add_key hurries it along).
        return AttemptResult(AttemptOutcome.RETRY, 0.0, error=no_live_key_reason(peer))
    headers = {"content-type": "application/json", **signing.sign_headers(str(message.id), body, secrets)}
    started = time.perf_counter()
    try:
        response = transport.post(peer.inbox_url, body, headers, settings.HERMES_FEDERATION_TIMEOUT)
    except transport.OutboundBlocked as exc:
        # The peer's URL points somewhere Hermes must not call: no retry will change that.
        return AttemptResult(AttemptOutcome.PERMANENT, _ms(started), error=f"blocked by the SSRF guard: {exc}"[:300])
    except httpx.InvalidURL as exc:
        # A base_url httpx cannot parse (saved before peers were checked for it): no retry will change that either.
        # (Not an httpx.HTTPError: it used to end in `deliver`'s crash handler, a traceback and a retry per attempt.)
        return AttemptResult(
            AttemptOutcome.PERMANENT,
            _ms(started),
            error=f"the peer's base_url is not a valid URL ({exc}): correct it, then requeue"[:300],
        )
    except transport.TooSlow as exc:
        # "timeout: " like httpx's own timeouts below, so a search for timeouts in the attempt log finds both.
        return AttemptResult(AttemptOutcome.RETRY, _ms(started), error=f"timeout: {exc}")
    # (selectors.may_have_arrived reads "timeout: ConnectTimeout" and "ConnectError: …" as "never sent": keep
    # these forms in step with it.)
    except httpx.TimeoutException as exc:
        return AttemptResult(AttemptOutcome.RETRY, _ms(started), error=f"timeout: {type(exc).__name__}")
    except httpx.HTTPError as exc:
        return AttemptResult(AttemptOutcome.RETRY, _ms(started), error=f"{type(exc).__name__}: {exc}"[:300])
    duration = _ms(started)
    status = response.status_code
    outcome = classify(status)
    excerpt = response.text[:500]
    if response.oversized and outcome == AttemptOutcome.DELIVERED:
        # No receipt is that big: whatever answered, it is not a Hermes that stored the message. Retried like a
        # transport error (the receiver deduplicates), with the beginning of the answer in the attempt log.
        return _bad_receipt(duration, response, transport.oversized_error())
    if outcome != AttemptOutcome.DELIVERED:
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        if 300 <= status < 400:
            error = _redirect_error(response.headers.get("location"))
        elif response.oversized:
            # The status says what happened; the body, cut at the limit, can no longer be parsed for the reason.
            error = transport.oversized_error()
        else:
            error = peer_error(response.content)
        return AttemptResult(
            outcome, duration, http_status=status, error=error, response_excerpt=excerpt, retry_after=retry_after
        )
    # The receipt is signed by the peer with the link keys: it proves the peer (not a proxy) stored the message.
    try:
        if settings.HERMES_FEDERATION_HMAC:
            signing.verify(response.headers, response.content, secrets, tolerance=settings.HERMES_FEDERATION_TOLERANCE)
        if response.headers.get("webhook-id") != str(message.id):
            raise signing.SignatureError("bad_signature", "receipt is for another message")
        receipt = response.json()["receipt"]
        _check_receipt(receipt, message)
    except signing.SignatureError as exc:
        return _bad_receipt(duration, response, f"receipt rejected: {exc.reason}")
    except BadReceipt as exc:
        return _bad_receipt(duration, response, f"receipt rejected: {exc}")
    except (ValueError, KeyError, TypeError):
        return _bad_receipt(duration, response, "receipt is not JSON with a 'receipt' object")
    return AttemptResult(
        AttemptOutcome.DELIVERED,
        duration,
        http_status=status,
        response_excerpt=excerpt,
        receipt=receipt,
        receipt_body=response.text,
        receipt_timestamp=int(response.headers.get("webhook-timestamp") or 0) or None,
        receipt_signature=response.headers.get("webhook-signature", ""),
    )


UNREADABLE_KEYS_FIX = 'see `manage.py doctor` and docs/configuration.md, "Changing SECRET_KEY or HERMES_FIELD_KEY"'


class BadReceipt(Exception):
    pass


def _check_receipt(receipt: Any, message: Message) -> None:
    """A signed 200 is a delivery only with a receipt that says this message was accepted: `null`, `"yes"` or a
    receipt for another message counted as delivered, so a broken peer made messages vanish as delivered."""
    if not isinstance(receipt, dict):
        raise BadReceipt(f"the receipt is {type(receipt).__name__}, not an object")
    if receipt.get("message_id") != str(message.id):
        named = str(receipt.get("message_id"))[:40]
        raise BadReceipt(f"the receipt is for message {named}, not this one")
    if receipt.get("status") != "accepted":
        status = str(receipt.get("status"))[:40]
        raise BadReceipt(f"the receipt's status is {status!r}, not 'accepted'")


def _redirect_error(location: str | None) -> str:
    # The signed request names the peer's receive path: it is never re-sent elsewhere (the SSRF guard would have
    # to check a URL the peer chose, and the signature would be handed to whoever the peer points at). A peer that
    # moved needs its base_url corrected.
    where = f"Location: {location[:200]}" if location else "no Location header"
    return f"redirects are not followed ({where}); if the peer moved, correct its base_url"


def _bad_receipt(duration: float, response: transport.Answer, error: str) -> AttemptResult:
    # Retried: the receiver deduplicates, so the next attempt gets the original receipt again.
    return AttemptResult(
        AttemptOutcome.RETRY,
        duration,
        http_status=response.status_code,
        error=error,
        response_excerpt=response.text[:500],
    )


def _in_process(outbox: Outbox) -> AttemptResult:
    from apps.federation.inbound import receive

    message = outbox.message
    started = time.perf_counter()
    result = receive(peer=None, message_id=str(message.id), data=json.loads(envelope(message)))
    outcome = classify(result.status)
    excerpt = json.dumps(result.body)[:500]
    if outcome == AttemptOutcome.DELIVERED:
        return AttemptResult(
            outcome, _ms(started), http_status=result.status, response_excerpt=excerpt, receipt=result.body["receipt"]
        )
    return AttemptResult(
        outcome, _ms(started), http_status=result.status, error=peer_error(result.body), response_excerpt=excerpt
    )


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def deliver(outbox_id: int) -> str | None:
    """Run one attempt for the row if it is due and nobody else holds it. Returns the new status (or None)."""
    outbox = claim_delivery(outbox_id)
    if outbox is None:
        return None
    try:
        result = _over_http(outbox) if outbox.message.peer_id else _in_process(outbox)
    except DecryptionError as exc:
        # The link keys were stored under another SECRET_KEY or HERMES_FIELD_KEY: a configuration problem, said in
        # one line with its fix (a traceback per attempt said nothing more). Retried: once the old key is put back
        # in HERMES_FIELD_KEY the message goes.
        error = f"cannot sign: the link keys cannot be read ({exc}); {UNREADABLE_KEYS_FIX}"
        logger.warning("federation: outbox %s not sent: %s", outbox_id, error)
        result = AttemptResult(AttemptOutcome.RETRY, 0.0, error=error)
    except Exception as exc:  # a bug or a database error mid-attempt: record it and retry like a transport error
        logger.exception("federation: attempt on outbox %s crashed", outbox_id)
        result = AttemptResult(AttemptOutcome.RETRY, 0.0, error=f"internal error: {type(exc).__name__}: {exc}")
    return finish_attempt(outbox, result)
