"""Standard Webhooks v1 signatures (https://www.standardwebhooks.com), for several keys at once.

    webhook-id:        the message id (the idempotency key)
    webhook-timestamp: integer seconds since the epoch
    webhook-signature: space-separated `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`, one per live
                       link key, so a receiver that knows either K_n or K_n+1 verifies during a rotation.

Any Standard Webhooks library verifies what `sign_headers` produces (the test suite checks with `standardwebhooks`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks secret prefix, not a secret
# A skew this large (about 31,700 years) is not a clock problem: the message names the bound instead of printing
# an attacker's hundreds of digits back.
_IMPLAUSIBLE_SKEW = 10**12


class SignatureError(Exception):
    """`code` is the audit event: `bad_signature` or `stale_timestamp`."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def encode_secret(secret: bytes) -> str:
    return SECRET_PREFIX + base64.b64encode(secret).decode()


def decode_secret(text: str) -> bytes:
    value = text.strip().removeprefix(SECRET_PREFIX)
    try:
        secret = base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise ValueError("a link secret is `whsec_` followed by base64") from exc
    if len(secret) < 24:
        raise ValueError("a link secret must hold at least 24 random bytes")
    return secret


def _mac(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    return hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def signature_header(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[bytes]) -> str:
    return " ".join("v1," + base64.b64encode(_mac(s, msg_id, timestamp, body)).decode() for s in secrets)


def sign_headers(msg_id: str, body: bytes, secrets: Sequence[bytes], *, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts)}
    if secrets:
        headers["webhook-signature"] = signature_header(msg_id, ts, body, secrets)
    return headers


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[bytes],
    *,
    tolerance: int,
    now: float | None = None,
) -> tuple[str, int]:
    """Check the timestamp window, then that some v1 signature matches some live secret.

    Returns (webhook-id, timestamp). The window is checked first so a replay outside it is reported as stale
    even when its signature is genuine.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    raw_ts = lowered.get("webhook-timestamp", "")
    raw_sig = lowered.get("webhook-signature", "")
    if not (msg_id and raw_ts and raw_sig):
        raise SignatureError("bad_signature", "missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise SignatureError("bad_signature", "webhook-timestamp is not an integer") from None
    # Whole seconds in integer arithmetic, as the header counts them: a float conversion overflows on a timestamp
    # of hundreds of digits (a 500 for anyone who knows a peer's name), and a truncated float skew reported 301 s
    # as "300 s ...; window ±300 s". So the skew printed is exactly the one compared.
    skew = math.floor(time.time() if now is None else now) - timestamp
    if abs(skew) > tolerance:
        direction = "old" if skew > 0 else "in the future"
        amount = f"{abs(skew)} s" if abs(skew) < _IMPLAUSIBLE_SKEW else f"more than {_IMPLAUSIBLE_SKEW} s"
        raise SignatureError("stale_timestamp", f"timestamp is {amount} {direction}; window ±{tolerance} s")
    expected = [_mac(s, msg_id, timestamp, body) for s in secrets]
    for part in raw_sig.split():
        version, _, encoded = part.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        if any(hmac.compare_digest(given, e) for e in expected):
            return msg_id, timestamp
    raise SignatureError("bad_signature", "no v1 signature matches a live link key")
