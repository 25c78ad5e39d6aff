"""Federation addresses (docs/federation.md).

    acme                  the org `acme` on this instance
    echo.acme             agent `echo` of org `acme` on this instance
    globex@berlin         org `globex` on the peer we call `berlin`
    summarizer.globex@berlin

Slugs never contain `.` or `@`, so the format is unambiguous. On the wire only the part local to the receiver
travels (`{"org", "agent"}`); the receiver qualifies the sender with its own name for the sending link.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SLUG = r"[a-z0-9](?:[a-z0-9_-]{0,78}[a-z0-9])?"
_ADDRESS = re.compile(rf"^(?:(?P<agent>{_SLUG})\.)?(?P<org>{_SLUG})(?:@(?P<peer>{_SLUG}))?$")
_PATTERN = re.compile(rf"^(?:\*|\*@(?P<peer>{_SLUG}))$")


class InvalidAddress(ValueError):
    pass


def is_slug(value: str) -> bool:
    """Whether `value` can be one part of an address (an org, agent or peer name)."""
    return bool(re.fullmatch(_SLUG, value))


@dataclass(frozen=True)
class Address:
    org: str
    agent: str | None = None
    peer: str | None = None  # None: this instance

    @classmethod
    def parse(cls, text: str) -> Address:
        match = _ADDRESS.match(text.strip().lower())
        if not match:
            raise InvalidAddress(
                f"{_quoted(text)} is not a federation address: use org, agent.org, org@peer or agent.org@peer "
                "(lower-case slugs)."
            )
        return cls(org=match["org"], agent=match["agent"], peer=match["peer"])

    @classmethod
    def from_wire(cls, data: Any, peer: str | None, field: str = "address") -> Address:
        """The address a message names in `field` (`sender` or `recipient`), qualified with `peer`. Each part is
        checked as the slug it is: joined into text and parsed, `{"org": "echo.acme"}` read as agent `echo` and
        `{"org": "acme@x"}` as org `acme` of a peer the sender has no say over."""
        agent = data.get("agent") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("org"), str) or not isinstance(agent, str | None):
            # A number for the agent read as a slug ("123.acme") and was stored so.
            raise InvalidAddress(f"'{field}' is an object with 'org' and optional 'agent' (strings)")
        # Lower-cased as a parsed address is (the sender's slugs are stored as they were typed).
        org, agent = data["org"].lower(), (agent or "").lower() or None
        for part, value in (("org", org), ("agent", agent)):
            if value is not None and not is_slug(value):
                raise InvalidAddress(
                    f"'{field}.{part}' must be a slug (lower-case letters, digits, '-' and '_'), not "
                    f"{_quoted(data[part])}"
                )
        return cls(org=org, agent=agent, peer=peer)

    def wire(self) -> dict[str, str | None]:
        return {"org": self.org, "agent": self.agent}

    @property
    def is_local(self) -> bool:
        return self.peer is None

    def org_address(self) -> Address:
        return Address(org=self.org, peer=self.peer)

    def __str__(self) -> str:
        text = f"{self.agent}.{self.org}" if self.agent else self.org
        return f"{text}@{self.peer}" if self.peer else text


def _quoted(text: str, limit: int = 60) -> str:
    """`text` quoted for a message, cut at `limit` characters: what a client sent is echoed, never all of it."""
    return repr(text[:limit] + "…") if len(text) > limit else repr(text)


def validate_pattern(text: str) -> str:
    """A policy's remote side: an address, `*@peer` or `*`. Returns the canonical form."""
    value = text.strip().lower()
    if _PATTERN.match(value):
        return value
    try:
        return str(Address.parse(value))
    except InvalidAddress:
        raise InvalidAddress(
            f"{_quoted(text)} is not a policy's remote side: use * (everyone), *@peer (everyone on a peer), org, "
            "agent.org, org@peer or agent.org@peer (lower-case slugs)."
        ) from None


def pattern_peer(pattern: str) -> str | None:
    """The peer a canonical pattern (from `validate_pattern`) names, or None (`*`, or an address here)."""
    if pattern == "*":
        return None
    wildcard = _PATTERN.match(pattern)
    return wildcard["peer"] if wildcard else Address.parse(pattern).peer


def pattern_specificity(pattern: str, remote: Address) -> int | None:
    """How specifically `pattern` names `remote` (higher wins), or None when it does not match."""
    if pattern == "*":
        return 0
    wildcard = _PATTERN.match(pattern)
    if wildcard:
        return 1 if wildcard["peer"] == remote.peer else None
    target = Address.parse(pattern)
    if target.peer != remote.peer or target.org != remote.org:
        return None
    if target.agent is None:
        return 2
    return 3 if target.agent == remote.agent else None
