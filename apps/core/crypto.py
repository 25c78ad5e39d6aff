"""Secrets at rest: Fernet encryption for values Hermes must read back (federation link keys).

The key comes from HERMES_FIELD_KEY (one or more comma-separated keys; the first encrypts, all decrypt, so the
field key itself can be rotated) or, when unset, is derived from SECRET_KEY. A value that is not already a Fernet
key is stretched with SHA-256, so operators may use any long random string.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class DecryptionError(Exception):
    """The ciphertext was not made with any configured field key (or was tampered with)."""


def _as_fernet_key(material: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(material.encode())
        if len(raw) == 32:
            return material.encode()
    except (binascii.Error, ValueError):
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(material.encode()).digest())


@lru_cache(maxsize=8)
def _fernet(field_key: str, secret_key: str) -> MultiFernet:
    materials = [part.strip() for part in field_key.split(",") if part.strip()] or [f"hermes-field-key:{secret_key}"]
    return MultiFernet([Fernet(_as_fernet_key(m)) for m in materials])


def _current() -> MultiFernet:
    return _fernet(getattr(settings, "HERMES_FIELD_KEY", "") or "", settings.SECRET_KEY)


def encrypt(plaintext: bytes) -> str:
    return _current().encrypt(plaintext).decode()


def decrypt(token: str) -> bytes:
    try:
        return _current().decrypt(token.encode())
    except InvalidToken as exc:
        raise DecryptionError("cannot decrypt: HERMES_FIELD_KEY (or SECRET_KEY) changed since it was stored") from exc
