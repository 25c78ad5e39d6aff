"""Secrets at rest: Fernet encryption for values Hermes must read back (federation link keys).

The key comes from HERMES_FIELD_KEY (one or more comma-separated keys; the first encrypts, all decrypt, so the
field key itself can be rotated) or, when unset, is derived from SECRET_KEY. A value that is not already a Fernet
key is stretched with SHA-256, so operators may use any long random string.

Changing SECRET_KEY while HERMES_FIELD_KEY is unset changes the field key, and what was stored can no longer be
read: `python -m apps.core.crypto` prints the field key of the SECRET_KEY in the environment, the value that, put
in HERMES_FIELD_KEY, keeps reading it (docs/configuration.md, "Changing SECRET_KEY or HERMES_FIELD_KEY").
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


def _derived_material(secret_key: str) -> str:
    return f"hermes-field-key:{secret_key}"


def field_key_of(secret_key: str) -> str:
    """The field key that `secret_key` stands for while HERMES_FIELD_KEY is unset, as a Fernet key: set as (or
    added to) HERMES_FIELD_KEY it decrypts what was stored under that SECRET_KEY, whatever SECRET_KEY is later."""
    return _as_fernet_key(_derived_material(secret_key)).decode()


@lru_cache(maxsize=8)
def _fernet(field_key: str, secret_key: str) -> MultiFernet:
    materials = [part.strip() for part in field_key.split(",") if part.strip()] or [_derived_material(secret_key)]
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


def decrypts(token: str) -> bool:
    """Whether one of the configured field keys decrypts `token` (checks: `doctor`, the health breakdown)."""
    try:
        decrypt(token)
    except DecryptionError:
        return False
    return True


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    import os
    import sys

    from hermes_site.config import INSECURE_SECRET_KEY

    secret_key = os.environ.get("SECRET_KEY", "")
    if not secret_key:
        # What settings use when SECRET_KEY is unset (dev and test only; production refuses to start).
        print("SECRET_KEY is not set: this is the field key of the dev default key.", file=sys.stderr)
    print(field_key_of(secret_key or INSECURE_SECRET_KEY))
