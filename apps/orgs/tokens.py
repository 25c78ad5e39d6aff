"""Secret tokens (API keys, invitations): 256 random bits shown once; the database keeps only a SHA-256 digest."""

from __future__ import annotations

import hashlib
import secrets

from apps.orgs.models import API_KEY_PREFIX

# secrets.token_urlsafe(32) is 43 characters: the prefix plus that is the only well-formed key.
API_KEY_LENGTH = len(API_KEY_PREFIX) + 43


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_invitation_token() -> str:
    return secrets.token_urlsafe(32)


def looks_like_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX) and len(token) == API_KEY_LENGTH
